"""Reference cells of the project's systems, as plain arrays (Å, Cartesian, rows are lattice vectors)."""

from __future__ import annotations

import numpy as np

from .units import BOHR_TO_ANGSTROM


def zincblende(symbols: tuple[str, str], primitive_length_angstrom: float):
    """2-atom fcc primitive cell, cation at the origin, anion at (¼,¼,¼) of the cube."""
    a_cubic = primitive_length_angstrom * np.sqrt(2.0)
    cell = 0.5 * a_cubic * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    positions = np.array([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]) * a_cubic
    return cell, positions, list(symbols)


def gaas():
    """Zincblende GaAs with the radnet paper's 4.066 Å primitive vectors."""
    return zincblende(('Ga', 'As'), 4.066)


def bn_cubic():
    """Cubic (zincblende) BN with the radnet paper's 2.564 Å primitive vectors."""
    return zincblende(('B', 'N'), 2.564)


# hcp Mg, 4-atom orthorhombic reference cell of seed 002 (a0 || [10-10], c0 || [0001]).
MG_ACELL_BOHR = np.array([5.89, 10.201779256580686, 9.56])
MG_REFERENCE_XRED = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 2.0 / 3.0, 0.5], [0.5, 1.0 / 6.0, 0.5]])


def mg_reference():
    cell = np.diag(MG_ACELL_BOHR) * BOHR_TO_ANGSTROM
    return cell, MG_REFERENCE_XRED @ cell, ['Mg'] * 4
