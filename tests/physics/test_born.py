"""Conversions of reduced-coordinate second derivatives (ABINIT DDB) to Cartesian ε∞, Z*, force constants.

The recorded-output tests in tests/abinit/test_response_parser.py check these against ABINIT's own
printout; here: the inverse maps, covariance under a rotation of the cell, ASR and the P quanta.
"""

import numpy as np

from aiida_mlresponse.physics.born import (
    born_charges_from_reduced, dielectric_from_reduced, force_constants_from_reduced, impose_acoustic_sum_rule,
    polarization_from_phases,
)
from aiida_mlresponse.physics.polarization import polarization_quanta

RNG = np.random.default_rng(7)
CELL = np.array([[0.1, 3.4, 3.5], [3.3, -0.2, 3.4], [3.6, 3.2, 0.3]])  # no symmetry, not symmetric


def rotation(angle, axis):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_cubic_cell_by_hand():
    a = 5.0
    cell = a * np.eye(3)
    d2 = np.diag([-10.0, -20.0, -30.0])  # d²E/dE_red²
    # A reduced field component is a Cartesian one times a/2π: ε = 1 - (4π/a³) (a/2π)² d2.
    expected = np.eye(3) - 4.0 * np.pi / a**3 * (a / (2 * np.pi)) ** 2 * d2
    np.testing.assert_allclose(dielectric_from_reduced(d2, cell), expected)
    # Force constants: a reduced displacement of 1 is a Cartesian one of a.
    fc_red = RNG.normal(size=(2, 3, 2, 3))
    np.testing.assert_allclose(force_constants_from_reduced(fc_red, cell), fc_red / a**2)
    # Born charges: the electronic part is (1/2π) d²E/dτ_red dE_red^T, shifted by the ionic charge.
    mixed = RNG.normal(size=(2, 3, 3))
    z = born_charges_from_reduced(mixed, cell, [3.0, 5.0])
    np.testing.assert_allclose(z[1], 5.0 * np.eye(3) + mixed[1].T / (2 * np.pi))


def test_inverse_maps_round_trip():
    eps = np.array([[6.0, 0.2, -0.1], [0.2, 5.5, 0.3], [-0.1, 0.3, 5.8]])
    volume = abs(np.linalg.det(CELL))
    # Inverse of ε = 1 - (4π/Ω) cellᵀ d2 cell / 4π².
    d2 = 4 * np.pi**2 * np.linalg.inv(CELL).T @ ((np.eye(3) - eps) * volume / (4 * np.pi)) @ np.linalg.inv(CELL)
    np.testing.assert_allclose(dielectric_from_reduced(d2, CELL), eps, atol=1e-12)
    fc = RNG.normal(size=(2, 3, 2, 3))
    fc_red = np.einsum('ia,kalb,jb->kilj', CELL, fc, CELL)  # derivative along R_i = R_i · gradient
    np.testing.assert_allclose(force_constants_from_reduced(fc_red, CELL), fc, atol=1e-12)


def test_rotating_the_cell_rotates_the_tensors():
    """Reduced derivatives do not change when the whole crystal rotates; Cartesian tensors must co-rotate."""
    q = rotation(0.7, [1.0, 2.0, -0.5])
    rotated = CELL @ q.T
    eps_red = RNG.normal(size=(3, 3))
    eps_red = -(eps_red @ eps_red.T) - 5 * np.eye(3)
    mixed = RNG.normal(size=(2, 3, 3))
    fc_red = RNG.normal(size=(2, 3, 2, 3))
    eps, eps_rot = dielectric_from_reduced(eps_red, CELL), dielectric_from_reduced(eps_red, rotated)
    np.testing.assert_allclose(eps_rot, q @ eps @ q.T, atol=1e-12)
    z, z_rot = born_charges_from_reduced(mixed, CELL, [1.0, -1.0]), born_charges_from_reduced(mixed, rotated, [1.0, -1.0])
    np.testing.assert_allclose(z_rot, np.einsum('ab,kbc,dc->kad', q, z, q), atol=1e-12)
    fc, fc_rot = force_constants_from_reduced(fc_red, CELL), force_constants_from_reduced(fc_red, rotated)
    np.testing.assert_allclose(fc_rot, np.einsum('ab,kblc,dc->kald', q, fc, q), atol=1e-12)


def test_acoustic_sum_rule():
    z = RNG.normal(size=(5, 3, 3)) + 2.0
    fixed = impose_acoustic_sum_rule(z)
    np.testing.assert_allclose(fixed.sum(axis=0), 0.0, atol=1e-12)
    # Same correction on every atom, and nothing changes for charges that already obey the rule.
    np.testing.assert_allclose(np.diff(fixed - z, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(impose_acoustic_sum_rule(fixed), fixed, atol=1e-12)


def test_polarization_from_phases_and_quanta():
    phases = np.array([0.1, -0.3, 0.45])
    p = polarization_from_phases(phases, CELL)
    np.testing.assert_allclose(p, phases @ polarization_quanta(CELL))
    # One more turn of the phase along R_2 is exactly one quantum e R_2 / Ω.
    np.testing.assert_allclose(polarization_from_phases(phases + [0, 1, 0], CELL) - p, polarization_quanta(CELL)[1])
