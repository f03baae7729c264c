"""Symmetry-reduced finite differences of ε∞: operations, minimal displacements, exact reconstruction on a model."""

import itertools

import numpy as np
import pytest

from aiida_mlresponse.physics.crystals import bn_cubic, gaas, mg_reference
from aiida_mlresponse.physics.finite_differences import (
    born_charges_from_finite_differences, dchi_dtau_from_finite_differences, displaced_structures, irreducible_displacements, symmetrize_atomic,
    symmetrize_cartesian, symmetry_operations)
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

SIGMA = 3.0  # Bohr, range of the model's bonds
STEP = 1e-3  # Bohr
LEVI_CIVITA_ABS = np.zeros((3, 3, 3))
for _a, _b, _c in itertools.permutations(range(3)):
    LEVI_CIVITA_ABS[_a, _b, _c] = 1.0


def in_bohr(crystal):
    cell, positions, symbols = crystal
    numbers = [{'Ga': 31, 'As': 33, 'B': 5, 'N': 7, 'Mg': 12}[s] for s in symbols]
    return cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR, numbers


def triclinic():
    rng = np.random.default_rng(7)
    cell = np.diag([7.0, 8.0, 9.0]) + rng.uniform(-1.5, 1.5, (3, 3))
    positions = np.array([[0.05, 0.1, 0.0], [0.45, 0.35, 0.6], [0.7, 0.8, 0.25]]) @ cell
    return cell, positions, [8, 8, 14]


def kagome():
    """P6mm: a kagome layer (3-atom orbit, site 2mm) under an apex atom. Its 3-atom orbit tells eq. (1) from the
    wrong pairing of R with S⁻¹(κ), which 1- and 2-atom orbits (GaAs, hcp) cannot."""
    cell = np.array([[7.0, 0.0, 0.0], [-3.5, 3.5 * np.sqrt(3.0), 0.0], [0.0, 0.0, 6.5]])
    positions = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.3]]) @ cell
    return cell, positions, [8, 8, 8, 14]


def rotated(crystal):
    """The same crystal in a general Cartesian orientation."""
    rotation = np.linalg.qr(np.random.default_rng(11).normal(size=(3, 3)))[0]
    cell, positions, numbers = crystal
    return cell @ rotation.T, positions @ rotation.T, numbers


CRYSTALS = {'GaAs': in_bohr(gaas()), 'BN': in_bohr(bn_cubic()), 'Mg': in_bohr(mg_reference()), 'P1': triclinic(),
            'kagome': kagome(), 'GaAs rotated': rotated(in_bohr(gaas()))}


def bonds(cell, positions, numbers):
    """Every bond (κ, κ', r = τ_κ' + L - τ_κ) with 0 < |r| < 6σ, and its weight a = c_ZZ' exp(-|r|²/σ²)."""
    cutoff = 6.0 * SIGMA
    nmax = np.ceil(cutoff * np.linalg.norm(np.linalg.inv(cell), axis=0)).astype(int) + 1
    lattice = np.array(list(itertools.product(*(range(-n, n + 1) for n in nmax)))) @ cell
    r = positions[None, :, None, :] + lattice[None, None] - positions[:, None, None, :]
    distance = np.linalg.norm(r, axis=-1)
    z = np.asarray(numbers, dtype=float)
    c = 1.0 + 0.05 * (z[:, None] + z[None, :]) + 0.01 * z[:, None] * z[None, :]  # species pair, symmetric
    keep = (distance > 1e-8) & (distance < cutoff)
    k, kp, _ = np.nonzero(keep)
    return k, kp, r[keep], c[k, kp] * np.exp(-distance[keep] ** 2 / SIGMA**2)


def model_chi(cell, positions, numbers):
    """A made-up χ = Σ_bonds a(|r|) r⊗r: smooth, translation invariant, with the crystal's symmetry."""
    _, _, r, a = bonds(cell, positions, numbers)
    return np.einsum('n,na,nb->ab', a, r, r)


def model_dchi_dtau(cell, positions, numbers):
    """Analytic ∂χ_αβ/∂τ_κγ of model_chi: ∂(a r_α r_β)/∂r_γ = -2a/σ² r_γ r_α r_β + a (δ_αγ r_β + r_α δ_βγ)."""
    k, kp, r, a = bonds(cell, positions, numbers)
    eye = np.eye(3)
    per_bond = (-2.0 / SIGMA**2 * np.einsum('n,ng,na,nb->ngab', a, r, r, r)
                + np.einsum('n,ag,nb->ngab', a, eye, r) + np.einsum('n,na,bg->ngab', a, r, eye))
    result = np.zeros((len(positions), 3, 3, 3))
    np.add.at(result, kp, per_bond)
    np.add.at(result, k, -per_bond)
    return result


def model_epsilons(cell, structures, numbers):
    """ε∞ = 1 + 4π χ of the model at structures (ndisp, 2, natom, 3) -> (plus, minus), each (ndisp, 3, 3)."""
    eps = np.array([[np.eye(3) + 4 * np.pi * model_chi(cell, p, numbers) for p in pair] for pair in structures])
    return eps[:, 0], eps[:, 1]


def rotate3(rotation, tensor):
    return np.einsum('gc,ad,be,cde->gab', rotation, rotation, rotation, tensor)


@pytest.mark.parametrize('name', ['GaAs', 'BN', 'GaAs rotated'])
def test_zincblende_has_24_operations_and_one_displacement(name):
    cell, positions, numbers = CRYSTALS[name]
    rotations, translations, permutations = symmetry_operations(cell, positions, numbers)
    assert len(rotations) == 24
    np.testing.assert_allclose(rotations[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotations @ np.swapaxes(rotations, 1, 2), np.tile(np.eye(3), (24, 1, 1)), atol=1e-12)
    assert sorted(np.round(np.linalg.det(rotations)).tolist()) == [-1.0] * 12 + [1.0] * 12  # Td
    np.testing.assert_allclose(translations, 0.0, atol=1e-10)  # F-43m is symmorphic
    assert (permutations == [0, 1]).all()
    displacements = irreducible_displacements(cell, positions, numbers)
    assert len(displacements) == 1  # 2 ABINIT runs (±h)
    assert displacements[0][0] == 0
    np.testing.assert_allclose(displacements[0][1], [1.0, 0.0, 0.0])
    structures = displaced_structures(positions, displacements, STEP)
    assert structures.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(structures[0, 0] - positions, [[STEP, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(structures[0, 1] - positions, [[-STEP, 0, 0], [0, 0, 0]])


def test_supercell_and_nonsymmorphic_operations():
    """hcp Mg in its 4-atom orthorhombic cell: mmm rotations with screw/glide translations, times the centring."""
    cell, positions, numbers = CRYSTALS['Mg']
    rotations, translations, permutations = symmetry_operations(cell, positions, numbers)
    assert len(rotations) == 16
    pure = [s for s in range(16) if np.allclose(rotations[s], np.eye(3))]
    assert len(pure) == 2  # identity and the (½, ½, 0) centring
    assert any(not np.allclose(t, 0.0) for t in translations[[s for s in range(16) if s not in pure]])
    for rotation, translation, permutation in zip(rotations, translations, permutations):
        diff = (positions @ rotation.T + translation - positions[permutation]) @ np.linalg.inv(cell)
        np.testing.assert_allclose(diff, np.round(diff), atol=1e-9)


@pytest.mark.parametrize('name', ['GaAs', 'Mg', 'P1', 'kagome', 'GaAs rotated'])
def test_operations_map_derivatives_by_rotating_every_index(name):
    """Eq. (1) on the analytic model: ∂χ/∂τ_S(κ) = R⊗R⊗R ∂χ/∂τ_κ, and χ = R χ Rᵀ at equilibrium (kagome: see there)."""
    cell, positions, numbers = CRYSTALS[name]
    rotations, _, permutations = symmetry_operations(cell, positions, numbers)
    chi = model_chi(cell, positions, numbers)
    dchi = model_dchi_dtau(cell, positions, numbers)
    assert np.abs(dchi).max() > 1e-3
    for rotation, permutation in zip(rotations, permutations):
        np.testing.assert_allclose(rotation @ chi @ rotation.T, chi, atol=1e-10 * np.abs(chi).max())
        for atom in range(len(positions)):
            np.testing.assert_allclose(dchi[permutation[atom]], rotate3(rotation, dchi[atom]),
                                       atol=1e-10 * np.abs(dchi).max())


@pytest.mark.parametrize('name, expected_count', [('GaAs', 1), ('BN', 1), ('Mg', 1), ('P1', 6), ('kagome', 1), ('GaAs rotated', 1)])
def test_reconstruction_is_exact_on_the_model(name, expected_count):
    """From the few displaced runs, the full tensor equals the analytic one and the one differenced over all
    6 natom displacements (same step), to 1e-6 relative; the ASR holds."""
    cell, positions, numbers = CRYSTALS[name]
    natom = len(positions)
    displacements = irreducible_displacements(cell, positions, numbers)
    assert len(displacements) == expected_count
    plus, minus = model_epsilons(cell, displaced_structures(positions, displacements, STEP), numbers)
    dchi = dchi_dtau_from_finite_differences(cell, positions, numbers, displacements, plus, minus, STEP)
    assert dchi.shape == (natom, 3, 3, 3)

    analytic = model_dchi_dtau(cell, positions, numbers)
    scale = np.abs(analytic).max()
    np.testing.assert_allclose(dchi, analytic, atol=1e-6 * scale)
    every = [(atom, direction) for atom in range(natom) for direction in np.eye(3)]  # 6 natom runs
    plus, minus = model_epsilons(cell, displaced_structures(positions, every, STEP), numbers)
    brute = ((plus - minus) / (8 * np.pi * STEP)).reshape(natom, 3, 3, 3)
    np.testing.assert_allclose(dchi, brute, atol=1e-6 * scale)
    np.testing.assert_allclose(dchi.sum(axis=0), 0.0, atol=1e-12 * scale)


def test_without_the_sum_rule_every_atom_is_displaced():
    cell, positions, numbers = CRYSTALS['P1']
    assert len(symmetry_operations(cell, positions, numbers)[0]) == 1
    displacements = irreducible_displacements(cell, positions, numbers, acoustic_sum_rule=False)
    assert [atom for atom, _ in displacements] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    plus, minus = model_epsilons(cell, displaced_structures(positions, displacements, STEP), numbers)
    dchi = dchi_dtau_from_finite_differences(cell, positions, numbers, displacements, plus, minus, STEP,
                                             acoustic_sum_rule=False)
    analytic = model_dchi_dtau(cell, positions, numbers)
    np.testing.assert_allclose(dchi, analytic, atol=1e-6 * np.abs(analytic).max())
    with pytest.raises(ValueError, match='do not determine'):
        dchi_dtau_from_finite_differences(cell, positions, numbers, displacements[:5], plus[:5], minus[:5], STEP)


def test_zincblende_tensor_form_even_from_noisy_epsilons():
    """Td: ∂χ_αβ/∂τ_κγ = ±d |ε_γαβ|, opposite on the two atoms, whatever noise the two ε∞ carry."""
    cell, positions, numbers = CRYSTALS['GaAs']
    displacements = irreducible_displacements(cell, positions, numbers)
    plus, minus = model_epsilons(cell, displaced_structures(positions, displacements, STEP), numbers)
    rng = np.random.default_rng(3)
    noisy = [e + 1e-6 * rng.normal(size=e.shape) for e in (plus, minus)]
    for epsilons in ((plus, minus), noisy):
        dchi = dchi_dtau_from_finite_differences(cell, positions, numbers, displacements, *epsilons, STEP)
        d = dchi[0, 2, 0, 1]
        assert abs(d) > 1e-3
        np.testing.assert_allclose(dchi[0], d * LEVI_CIVITA_ABS, atol=1e-12)
        np.testing.assert_allclose(dchi[1], -d * LEVI_CIVITA_ABS, atol=1e-12)
    np.testing.assert_allclose(d, model_dchi_dtau(cell, positions, numbers)[0, 2, 0, 1], rtol=1e-3)


def test_symmetrized_dielectric_and_born_charges():
    """ε∞ and Z* of a cubic crystal become isotropic; the average is idempotent and keeps symmetric input."""
    rng = np.random.default_rng(5)
    cell, positions, numbers = CRYSTALS['GaAs']
    operations = symmetry_operations(cell, positions, numbers)
    eps = 11.0 * np.eye(3) + 0.01 * rng.normal(size=(3, 3))
    symmetric = symmetrize_cartesian(operations, eps)
    np.testing.assert_allclose(symmetric, np.trace(eps) / 3 * np.eye(3), atol=1e-12)
    z = np.array([2.1, -2.1])[:, None, None] * np.eye(3) + 0.05 * rng.normal(size=(2, 3, 3))
    z_symmetric = symmetrize_atomic(operations, z)
    np.testing.assert_allclose(z_symmetric, np.trace(z, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3), atol=1e-12)

    cell, positions, numbers = CRYSTALS['Mg']
    operations = symmetry_operations(cell, positions, numbers)
    z = 0.1 * rng.normal(size=(4, 3, 3))
    once = symmetrize_atomic(operations, z)
    np.testing.assert_allclose(symmetrize_atomic(operations, once), once, atol=1e-14)
    for rotation, permutation in zip(operations[0], operations[2]):
        np.testing.assert_allclose(once[permutation], rotation @ once @ rotation.T, atol=1e-14)
    dchi = model_dchi_dtau(cell, positions, numbers)
    np.testing.assert_allclose(symmetrize_atomic(operations, dchi), dchi, atol=1e-12 * np.abs(dchi).max())


def model_polarization(cell, positions, numbers):
    """A made-up P = Σ_bonds (Z - Z') exp(-|r|²/σ²) r / Ω: a polar vector, zero without two species."""
    k, kp, r, a = bonds(cell, positions, numbers)
    z = np.asarray(numbers, dtype=float)
    weight = (z[k] - z[kp]) * np.exp(-np.linalg.norm(r, axis=1) ** 2 / SIGMA**2)
    return np.einsum('n,na->a', weight, r) / abs(np.linalg.det(cell))


@pytest.mark.parametrize('name', ['GaAs', 'BN', 'P1', 'kagome', 'GaAs rotated'])
def test_born_charges_from_the_minimal_runs_match_every_direction(name):
    """Z*_κ,αβ = Ω ∂P_α/∂τ_κβ from the irreducible ±h runs equals central differences over all 6 natom runs."""
    cell, positions, numbers = CRYSTALS[name]
    volume = abs(np.linalg.det(cell))
    everything = [(atom, direction) for atom in range(len(positions)) for direction in np.eye(3)]
    full = displaced_structures(positions, everything, STEP)
    brute = np.array([(model_polarization(cell, pair[0], numbers) - model_polarization(cell, pair[1], numbers)) / (2 * STEP)
                      for pair in full]).reshape(len(positions), 3, 3)  # [κ, β, α]
    expected = volume * np.swapaxes(brute, 1, 2)
    expected -= expected.mean(axis=0)
    displacements = irreducible_displacements(cell, positions, numbers)
    structures = displaced_structures(positions, displacements, STEP)
    plus = np.array([model_polarization(cell, pair[0], numbers) for pair in structures])
    minus = np.array([model_polarization(cell, pair[1], numbers) for pair in structures])
    charges = born_charges_from_finite_differences(cell, positions, numbers, displacements, plus, minus, STEP)
    np.testing.assert_allclose(charges, expected, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(charges.sum(axis=0), 0.0, atol=1e-12 * np.abs(expected).max())
    if name in ('GaAs', 'BN'):  # Td sites: isotropic charges, opposite on the two atoms
        np.testing.assert_allclose(charges[0], charges[0, 0, 0] * np.eye(3), atol=1e-9 * abs(charges[0, 0, 0]))
        assert abs(charges[0, 0, 0]) > 1e-3
