"""Γ phonons and LO-TO splitting on a diatomic crystal computed by hand."""

import numpy as np
import pytest

from aiida_mlresponse.physics.phonons import (
    gamma_phonons,
    impose_acoustic_sum_rule_force_constants,
    lo_to_frequencies,
    nonanalytic_force_constants,
)
from aiida_mlresponse.physics.units import AMU_TO_ME, HARTREE_TO_CM1

# Two atoms joined by an isotropic spring k: C_11 = C_22 = k·I, C_12 = C_21 = -k·I.
K = 0.1  # Ha/Bohr²
MASSES_ME = np.array([1000.0, 3000.0])  # electron masses, reduced mass μ = 750
MASSES_AMU = MASSES_ME / AMU_TO_ME
Z = 2.0
EPS = 4.0
VOLUME = 100.0  # Bohr³


def diatomic_force_constants():
    c = np.zeros((2, 3, 2, 3))
    for a in range(2):
        for b in range(2):
            c[a, :, b, :] = (K if a == b else -K) * np.eye(3)
    return c


def born_charges():
    return np.array([Z * np.eye(3), -Z * np.eye(3)])


def test_to_modes_of_the_diatomic():
    frequencies, vectors = gamma_phonons(diatomic_force_constants(), MASSES_AMU)
    # By hand: three acoustic zeros, three TO modes at ω² = k/μ = 0.1/750.
    np.testing.assert_allclose(frequencies[:3], 0.0, atol=1e-9)  # √(round-off of ω²)
    np.testing.assert_allclose(frequencies[3:], np.sqrt(0.1 / 750.0), rtol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(6), atol=1e-12)


def test_lo_mode_of_the_diatomic():
    """ω_LO² = (k + 4π Z²/(Ω ε)) / μ = (0.1 + 4π·4/400) / 750 for q̂ along x; TO modes unchanged."""
    result = lo_to_frequencies(diatomic_force_constants(), MASSES_AMU, born_charges(), EPS * np.eye(3), VOLUME)
    omega_to = np.sqrt(0.1 / 750.0) * HARTREE_TO_CM1
    omega_lo = np.sqrt((0.1 + 4.0 * np.pi * 4.0 / 400.0) / 750.0) * HARTREE_TO_CM1
    np.testing.assert_allclose(result['to_cm1'][3:], omega_to, rtol=1e-12)
    np.testing.assert_allclose(result['lo_cm1'], [omega_lo] * 3, rtol=1e-12)
    np.testing.assert_allclose(result['lo_mean_cm1'], omega_lo, rtol=1e-12)
    # Along each direction: 3 acoustic, 2 TO, 1 LO.
    for row in result['with_nac_cm1']:
        np.testing.assert_allclose(row[:3], 0.0, atol=1e-3)  # cm^-1
        np.testing.assert_allclose(row[3:5], omega_to, rtol=1e-12)
    # The LO eigenvector along x moves the atoms along x only, in opposite directions.
    _, vectors = gamma_phonons(diatomic_force_constants(), MASSES_AMU, born_charges(), EPS * np.eye(3), VOLUME,
                               q_direction=[2.0, 0.0, 0.0])
    lo = vectors[:, -1].reshape(2, 3)
    np.testing.assert_allclose(lo[:, 1:], 0.0, atol=1e-12)
    assert lo[0, 0] * lo[1, 0] < 0


def test_nonanalytic_term_follows_the_field_index_of_anisotropic_charges():
    """(q̂·Z*_κ)_α = Σ_γ q̂_γ Z*_κ,γα: with q̂ = x only the first (field) row of Z* enters."""
    z = np.zeros((2, 3, 3))
    z[0] = [[1.0, 2.0, 0.0], [5.0, 7.0, 0.0], [0.0, 0.0, 1.0]]
    z[1] = -z[0]
    eps = np.diag([2.0, 3.0, 5.0])
    c = nonanalytic_force_constants(z, eps, VOLUME, [1.0, 0.0, 0.0])
    row = np.array([1.0, 2.0, 0.0])  # field along x, displacement α
    expected = 4.0 * np.pi / VOLUME * np.outer(row, row) / 2.0
    np.testing.assert_allclose(c[0, :, 0, :], expected, rtol=1e-14)
    np.testing.assert_allclose(c[0, :, 1, :], -expected, rtol=1e-14)
    c_y = nonanalytic_force_constants(z, eps, VOLUME, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(c_y[0, :, 0, :], 4.0 * np.pi / VOLUME * np.outer([5.0, 7.0, 0.0], [5.0, 7.0, 0.0]) / 3.0)


def test_acoustic_sum_rule_projection():
    rng = np.random.default_rng(0)
    c = diatomic_force_constants() + 1e-3 * rng.normal(size=(2, 3, 2, 3))
    fixed = impose_acoustic_sum_rule_force_constants(c)
    np.testing.assert_allclose(fixed.sum(axis=2), 0.0, atol=1e-15)
    matrix = fixed.reshape(6, 6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-15)
    # A matrix that already obeys the rule is left alone.
    np.testing.assert_allclose(impose_acoustic_sum_rule_force_constants(diatomic_force_constants()),
                               diatomic_force_constants(), atol=1e-15)


def test_lo_needs_charges_and_a_direction():
    with pytest.raises(ValueError, match='needs born_charges'):
        gamma_phonons(diatomic_force_constants(), MASSES_AMU, q_direction=[1, 0, 0])
    with pytest.raises(ValueError, match='non-zero'):
        nonanalytic_force_constants(born_charges(), np.eye(3), VOLUME, [0, 0, 0])
