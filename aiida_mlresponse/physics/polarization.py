"""Berry-phase polarization is defined modulo the quantum e R_i / Ω along each lattice vector R_i."""

from __future__ import annotations

import numpy as np


def polarization_quanta(cell_bohr) -> np.ndarray:
    """Rows: the polarization quantum e R_i / Ω (e/Bohr²) for each lattice vector R_i (Bohr)."""
    cell = np.asarray(cell_bohr, dtype=float)
    return cell / abs(np.linalg.det(cell))


def fix_branch(polarization, reference, cell_bohr) -> np.ndarray:
    """Shift P (e/Bohr², Cartesian, (3,) or (n, 3)) by whole quanta to the branch nearest `reference`.

    P - P_ref is written in the basis of the quanta, its coefficients are reduced to [-½, ½), and the
    result is added back to P_ref: continuous with the reference for any displacement smaller than
    half a quantum.
    """
    quanta = polarization_quanta(cell_bohr)
    delta = np.asarray(polarization, dtype=float) - np.asarray(reference, dtype=float)
    coefficients = np.linalg.solve(quanta.T, np.atleast_2d(delta).T).T
    coefficients -= np.round(coefficients)
    fixed = np.asarray(reference, dtype=float) + coefficients @ quanta
    return fixed.reshape(np.shape(polarization))


def extrapolate_k_mesh(coarse, dense, factor: int, cell_bohr) -> np.ndarray:
    """P on an infinitely dense k-mesh from P on meshes N and factor x N (e/Bohr², Cartesian, (3,)).

    The discrete Berry phase of a string of N k-points differs from the continuum one by O(1/N²) (its
    finite-difference Z* on the protocols' fcc four-shift 4-grids: +5.9 % for GaAs, measured against
    DFPT on an 8-grid), so P∞ ≈ P(fN) + (P(fN) - P(N)) / (f² - 1) (Richardson). The difference is taken on
    one branch (reduced to the quantum nearest zero), so the result is on the branch of `dense`.
    """
    if int(factor) < 2:
        raise ValueError(f'the dense mesh must be at least twice the coarse one, got factor {factor!r}.')
    dense = np.asarray(dense, dtype=float)
    step = fix_branch(dense, np.asarray(coarse, dtype=float), cell_bohr) - np.asarray(coarse, dtype=float)
    return dense + step / (int(factor) ** 2 - 1)
