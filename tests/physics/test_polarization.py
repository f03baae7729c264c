import numpy as np
import pytest

from aiida_mlresponse.physics.crystals import bn_cubic
from aiida_mlresponse.physics.polarization import fix_branch, polarization_quanta
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR


def test_bn_supercell_quantum_matches_published_value():
    """The radnet data README: quantum e R/Ω = 0.01506 e/Bohr² for the 2x2x2 BN supercell."""
    cell = 2 * bn_cubic('paper')[0] * ANGSTROM_TO_BOHR  # the published value is for the paper's lattice
    np.testing.assert_allclose(np.linalg.norm(polarization_quanta(cell), axis=1), 0.01506, rtol=2e-3)


def test_fix_branch_removes_whole_quanta_and_keeps_small_changes():
    cell = bn_cubic()[0] * ANGSTROM_TO_BOHR
    quanta = polarization_quanta(cell)
    reference = np.array([0.001, -0.002, 0.0005])
    small = reference + np.array([1e-4, -2e-4, 3e-5])
    jumped = np.stack([small + quanta[0], small - 2 * quanta[1] + quanta[2], small])
    np.testing.assert_allclose(fix_branch(jumped, reference, cell), np.tile(small, (3, 1)), atol=1e-14)
    np.testing.assert_allclose(fix_branch(small, reference, cell), small, atol=1e-15)


def test_extrapolate_k_mesh_removes_the_quadratic_error_across_a_branch_cut():
    """P(N) = P∞ + c/N²: the meshes N and 2N give P∞ back, also when ABINIT folded them onto different branches."""
    from aiida_mlresponse.physics.polarization import extrapolate_k_mesh, polarization_quanta

    cell = 5.3 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    exact, error = np.array([0.004, -0.0021, 0.0107]), np.array([0.0009, 0.0004, -0.0011])
    coarse = exact + error / 4**2
    dense = exact + error / 8**2 + polarization_quanta(cell)[1]  # one quantum away
    result = extrapolate_k_mesh(coarse, dense, 2, cell)
    np.testing.assert_allclose(result - polarization_quanta(cell)[1], exact, atol=1e-15)
    np.testing.assert_allclose(extrapolate_k_mesh(exact + error / 9, exact + error / 81, 3, cell), exact, atol=1e-15)
    with pytest.raises(ValueError, match='at least twice'):
        extrapolate_k_mesh(coarse, dense, 1, cell)
