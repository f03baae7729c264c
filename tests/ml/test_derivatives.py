"""Autograd Born charges and ∂χ/∂τ against central finite differences (float64, small untrained CNN)."""

import math

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.radnet.density import AtomCubes
from aiida_mlresponse.ml.common import VOIGT_PAIRS, voigt_to_tensor
from aiida_mlresponse.ml.radnet.derivatives import (
    AtomSumModel, born_charges, chi_derivatives, chi_directional_derivatives, jacobian)
from aiida_mlresponse.physics.crystals import gaas
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

F64 = torch.float64


def small_cnn(outputs, seed):
    """A random conv net of the radnet kind (3-D convolutions, ELU, stride-2 reduction, dense head)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ELU(),
        torch.nn.Conv3d(4, 4, 3, stride=2, padding=1), torch.nn.ELU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3**3, 16), torch.nn.ELU(), torch.nn.Linear(16, outputs),
    ).to(F64)


@pytest.fixture(scope='module')
def displaced_gaas():
    cell, positions, _ = gaas('paper')  # the geometry the finite-difference tolerances were set on
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    # A 2x1x1 supercell (4 atoms), randomly displaced, so every derivative is non-trivial.
    cell = np.diag([2, 1, 1]) @ cell
    positions = np.vstack([positions, positions + cell[0] / 2]) + np.random.default_rng(0).normal(0, 0.05, (4, 3))
    return cell, positions, np.array([31, 33, 31, 33])


def make_model(displaced_gaas, outputs, chunk_size=None, seed=0):
    cell, positions, numbers = displaced_gaas
    cubes = AtomCubes(n=5, spacing=1.2, sigma=1.0, window_radius=2.5, dtype=F64)
    scale = np.linspace(0.5, 1.5, outputs)
    return AtomSumModel(small_cnn(outputs, seed), cubes, cell, numbers, positions, scale=scale,
                        offset=np.arange(outputs), chunk_size=chunk_size)


def central_differences(function, positions, step=1e-4):
    result = []
    for atom, axis in np.ndindex(*positions.shape):
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        result.append((function(plus) - function(minus)).detach().numpy() / (2 * step))
    return np.stack(result, -1).reshape(-1, *positions.shape)  # (K, N, 3)


def test_jacobian_matches_finite_differences_batched_looped_and_chunked(displaced_gaas):
    positions = displaced_gaas[1]
    model = make_model(displaced_gaas, 6)
    numeric = central_differences(model, positions)
    analytic = jacobian(model, positions).numpy()
    assert np.abs(analytic).max() > 1e-3  # derivatives are not trivially zero
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9 * np.abs(numeric).max())
    np.testing.assert_allclose(jacobian(model, positions, batched=False).numpy(), analytic, atol=1e-13)
    chunked = make_model(displaced_gaas, 6, chunk_size=3)
    np.testing.assert_allclose(jacobian(chunked, positions).numpy(), analytic, atol=1e-13)
    # translation invariance of the representation: Σ_κ ∂X/∂τ_κ = 0 without any correction
    assert np.abs(analytic.sum(1)).max() < 1e-10 * np.abs(analytic).max()


def test_born_charges_and_acoustic_sum_rule(displaced_gaas):
    cell, positions, _ = displaced_gaas
    polarization = make_model(displaced_gaas, 3, seed=1)
    volume = abs(np.linalg.det(cell))
    charges = born_charges(polarization, positions)
    raw = born_charges(polarization, positions, acoustic_sum_rule=False)
    assert charges.shape == (4, 3, 3)
    numeric = central_differences(polarization, positions)  # (α, κ, β)
    np.testing.assert_allclose(raw, volume * numeric.transpose(1, 0, 2), rtol=1e-6, atol=1e-9 * np.abs(raw).max())
    np.testing.assert_allclose(charges.sum(0), 0, atol=1e-12 * np.abs(charges).max())
    np.testing.assert_allclose(charges, raw, atol=1e-9 * np.abs(raw).max())  # the rule holds by construction


def test_chi_derivatives_against_finite_differences(displaced_gaas):
    positions = displaced_gaas[1]
    dielectric = make_model(displaced_gaas, 6, seed=2)
    dchi = chi_derivatives(dielectric, positions)
    assert dchi.shape == (4, 3, 3, 3)
    numeric = central_differences(dielectric, positions)  # (6, κ, γ)
    expected = voigt_to_tensor(np.moveaxis(numeric, 0, -1)) / (4 * math.pi)
    np.testing.assert_allclose(dchi, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(dchi, np.swapaxes(dchi, -1, -2))  # χ is symmetric
    np.testing.assert_allclose(dchi.sum(0), 0, atol=1e-12 * np.abs(dchi).max())


def test_forward_mode_directional_derivatives_equal_the_contracted_jacobian(displaced_gaas):
    positions = displaced_gaas[1]
    dielectric = make_model(displaced_gaas, 6, seed=3, chunk_size=2)
    directions = np.random.default_rng(5).normal(size=(3, 4, 3))
    dchi = chi_derivatives(dielectric, positions, acoustic_sum_rule=False)
    expected = np.einsum('kgab,mkg->mab', dchi, directions)
    np.testing.assert_allclose(chi_directional_derivatives(dielectric, positions, directions), expected,
                               rtol=1e-10, atol=1e-14)


def test_jacobian_of_a_plain_callable_and_voigt_order():
    """Any torch callable works; VOIGT_PAIRS maps outputs (xx, yy, zz, yz, xz, xy) onto the symmetric tensor."""
    def quadratic(p):
        return torch.stack([(p**2).sum(), p[0, 0] * p[1, 1]])
    positions = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    result = jacobian(quadratic, torch.tensor(positions)).numpy()
    np.testing.assert_allclose(result[0], 2 * positions)
    np.testing.assert_allclose(result[1], [[5.0, 0, 0], [0, 1.0, 0]])
    tensor = voigt_to_tensor(np.arange(6.0))
    assert [tensor[a, b] for a, b in VOIGT_PAIRS] == list(range(6))
    assert tensor[2, 1] == 3 and tensor[1, 0] == 5


def test_raman_tensors_by_forward_mode_equal_those_from_the_full_jacobian(displaced_gaas):
    """physics.raman conventions: √Ω · (JVP along e/√M) = raman_tensors(∂χ/∂τ, e, M, Ω)."""
    from aiida_mlresponse.physics.raman import mode_displacements, raman_tensors

    cell, positions, _ = displaced_gaas
    dielectric = make_model(displaced_gaas, 6, seed=4)
    masses = np.array([69.723, 74.9216, 69.723, 74.9216])
    eigenvectors = np.linalg.qr(np.random.default_rng(6).normal(size=(12, 12)))[0][:, :4]
    volume = abs(np.linalg.det(cell))
    expected = raman_tensors(chi_derivatives(dielectric, positions), eigenvectors, masses, volume)
    forward = np.sqrt(volume) * chi_directional_derivatives(dielectric, positions,
                                                            mode_displacements(eigenvectors, masses))
    np.testing.assert_allclose(forward, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
