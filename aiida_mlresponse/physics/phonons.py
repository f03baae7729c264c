"""Γ phonons from Cartesian force constants, with the LO-TO non-analytic term (atomic units).

Conventions (shared with physics.born):
- force constants C_κα,κ'β = ∂²E/∂τ_κα ∂τ_κ'β, shape (natom, 3, natom, 3), Ha/Bohr²;
- masses in amu (converted here to electron masses), so that the eigenvalues of the dynamical
  matrix D = C / √(M_κ M_κ') are ω² in Ha²;
- Born charges Z*_κ,αβ = Ω ∂P_α/∂τ_κβ, shape (natom, 3, 3), α the field and β the displacement;
- frequencies are returned in Ha; an unstable mode comes back as a negative number (-|ω|).

The non-analytic term for a wave vector q → 0 along q̂ (METHODS.md, Gonze & Lee 1997):

    C^NA_κα,κ'β = (4π/Ω) (q̂·Z*_κ)_α (q̂·Z*_κ')_β / (q̂·ε∞·q̂),   (q̂·Z*_κ)_α = Σ_γ q̂_γ Z*_κ,γα.
"""

from __future__ import annotations

import numpy as np

from .units import AMU_TO_ME, HARTREE_TO_CM1


def impose_acoustic_sum_rule_force_constants(force_constants) -> np.ndarray:
    """Symmetric C with Σ_κ' C_κα,κ'β = 0: C' = P C P, P the projector orthogonal to rigid translations.

    P C P is the closest symmetric matrix (Frobenius) that a rigid translation leaves at zero energy.
    """
    c = np.asarray(force_constants, dtype=float)
    natom = c.shape[0]
    matrix = c.reshape(3 * natom, 3 * natom)
    matrix = 0.5 * (matrix + matrix.T)
    translations = np.tile(np.eye(3), (natom, 1)) / np.sqrt(natom)  # (3 natom, 3), orthonormal columns
    projector = np.eye(3 * natom) - translations @ translations.T
    return (projector @ matrix @ projector).reshape(c.shape)


def nonanalytic_force_constants(born_charges, epsilon, volume_bohr3, q_direction) -> np.ndarray:
    """The LO-TO term C^NA (natom, 3, natom, 3), Ha/Bohr², for q → 0 along `q_direction` (Cartesian)."""
    z = np.asarray(born_charges, dtype=float)
    eps = np.asarray(epsilon, dtype=float)
    q = np.asarray(q_direction, dtype=float)
    norm = np.linalg.norm(q)
    if norm == 0.0:
        raise ValueError('the direction of q must be a non-zero vector.')
    q = q / norm
    qz = np.einsum('g,kga->ka', q, z)  # (q̂·Z*_κ)_α
    return 4.0 * np.pi / volume_bohr3 * np.einsum('ka,lb->kalb', qz, qz) / (q @ eps @ q)


def dynamical_matrix(force_constants, masses_amu) -> np.ndarray:
    """Mass-weighted (3 natom, 3 natom) matrix D = C / √(M_κ M_κ'), Ha²."""
    c = np.asarray(force_constants, dtype=float)
    natom = c.shape[0]
    weights = 1.0 / np.sqrt(np.repeat(np.asarray(masses_amu, dtype=float) * AMU_TO_ME, 3))
    matrix = c.reshape(3 * natom, 3 * natom)
    return 0.5 * (matrix + matrix.T) * np.outer(weights, weights)


def gamma_phonons(force_constants, masses_amu, born_charges=None, epsilon=None, volume_bohr3=None,
                  q_direction=None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Ha, ascending, negative = unstable) and orthonormal eigenvectors (columns) at Γ.

    Without `q_direction` these are the analytic (TO) modes; with it, the non-analytic term for
    q → 0 along that direction is added (needs `born_charges`, `epsilon`, `volume_bohr3`).
    """
    c = np.asarray(force_constants, dtype=float)
    if q_direction is not None:
        if born_charges is None or epsilon is None or volume_bohr3 is None:
            raise ValueError('the LO-TO term needs born_charges, epsilon and volume_bohr3.')
        c = c + nonanalytic_force_constants(born_charges, epsilon, volume_bohr3, q_direction)
    eigenvalues, eigenvectors = np.linalg.eigh(dynamical_matrix(c, masses_amu))
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)), eigenvectors


def lo_to_frequencies(force_constants, masses_amu, born_charges, epsilon, volume_bohr3,
                      directions=np.eye(3)) -> dict:
    """TO frequencies and the frequencies with the LO-TO term along each of `directions`, in cm^-1.

    Returns {'to_cm1': (3 natom,), 'with_nac_cm1': (ndir, 3 natom), 'lo_cm1': (ndir,), 'lo_mean_cm1'},
    with `lo_cm1` the highest frequency along each direction (the LO mode of a 2-atom polar cell).
    """
    to, _ = gamma_phonons(force_constants, masses_amu)
    along = np.array([
        gamma_phonons(force_constants, masses_amu, born_charges, epsilon, volume_bohr3, q_direction=q)[0]
        for q in np.atleast_2d(directions)
    ])
    lo = along.max(axis=1) * HARTREE_TO_CM1
    return {
        'to_cm1': to * HARTREE_TO_CM1,
        'with_nac_cm1': along * HARTREE_TO_CM1,
        'lo_cm1': lo,
        'lo_mean_cm1': float(lo.mean()),
    }
