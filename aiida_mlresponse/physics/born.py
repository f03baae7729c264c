"""Born effective charges, ε∞ and Γ force constants from ABINIT's reduced-coordinate second derivatives.

ABINIT's DDB stores second derivatives of the energy with respect to perturbations in *reduced*
coordinates: an atomic displacement along a primitive vector R_i, and an electric field along R_i/2π
(the reduced direction of the ddk). With `cell` the matrix whose rows are the R_i (Bohr) and
B = cell^{-T} (rows: reciprocal vectors without 2π), the Cartesian tensors are

    force constants  C_κα,κ'β = (B^T D_κκ' B)_αβ                       (Ha/Bohr²)
    ε∞               ε_αβ = δ_αβ - (4π/Ω) (cell^T E cell)_αβ / (2π)²
    Born charges     Z*_κ,αβ = Z_ion,κ δ_αβ + (B^T M_κ cell)_βα / 2π   (α: field, β: displacement)

with D the displacement-displacement, E the field-field and M_κ[displacement, field] the mixed blocks.
These are the conventions ABINIT itself uses when it prints the tensors in its main output (the tests
check against those printed values on a sheared, rotated cell, where a transposition would show).
Z*_κ,αβ = Ω ∂P_α/∂τ_κβ.
"""

from __future__ import annotations

import numpy as np


def reciprocal_rows(cell_bohr) -> np.ndarray:
    """Rows b_i with R_i · b_j = δ_ij (no 2π)."""
    return np.linalg.inv(np.asarray(cell_bohr, dtype=float)).T


def force_constants_from_reduced(d2_reduced, cell_bohr) -> np.ndarray:
    """(natom, 3, natom, 3) d²E/dτ_red dτ_red -> Cartesian force constants (Ha/Bohr²), same shape."""
    d2 = np.asarray(d2_reduced, dtype=float)
    b = reciprocal_rows(cell_bohr)
    return np.einsum('ia,kilj,jb->kalb', b, d2, b)


def dielectric_from_reduced(d2_field_field, cell_bohr) -> np.ndarray:
    """(3, 3) d²E/dE_red dE_red -> the electronic dielectric tensor ε∞ (Cartesian)."""
    cell = np.asarray(cell_bohr, dtype=float)
    volume = abs(np.linalg.det(cell))
    d2_cart = cell.T @ np.asarray(d2_field_field, dtype=float) @ cell / (2.0 * np.pi) ** 2
    return np.eye(3) - 4.0 * np.pi / volume * d2_cart


def born_charges_from_reduced(d2_displacement_field, cell_bohr, ionic_charges) -> np.ndarray:
    """(natom, 3 displacement, 3 field) mixed second derivatives -> Z* (natom, 3 field α, 3 displacement β)."""
    d2 = np.asarray(d2_displacement_field, dtype=float)
    cell = np.asarray(cell_bohr, dtype=float)
    b = reciprocal_rows(cell)
    electronic = np.einsum('ib,kij,ja->kab', b, d2, cell) / (2.0 * np.pi)
    return electronic + np.asarray(ionic_charges, dtype=float)[:, None, None] * np.eye(3)


def impose_acoustic_sum_rule(born_charges) -> np.ndarray:
    """Z* with Σ_κ Z*_κ = 0, by subtracting the mean charge from every atom (Gonze & Lee 1997)."""
    z = np.asarray(born_charges, dtype=float)
    return z - z.mean(axis=0, keepdims=True)


def polarization_from_phases(reduced_phases, cell_bohr) -> np.ndarray:
    """Cartesian P (e/Bohr²) from the Berry phases φ_i (in units of 2π) along each R_i: P = Σ_i φ_i R_i / Ω.

    A change of φ_i by 1 is one polarization quantum e R_i / Ω (see physics.polarization).
    """
    cell = np.asarray(cell_bohr, dtype=float)
    return np.asarray(reduced_phases, dtype=float) @ cell / abs(np.linalg.det(cell))
