"""Conversions between AiiDA nodes and the plain arrays the physics/ml layers use."""

from __future__ import annotations

import numpy as np


def structure_from_arrays(cell, positions, symbols):
    """A StructureData written exactly as given (Å)."""
    from aiida import orm

    structure = orm.StructureData(cell=np.asarray(cell, dtype=float).tolist())
    for position, symbol in zip(np.asarray(positions, dtype=float), symbols):
        structure.append_atom(position=position.tolist(), symbols=symbol)
    return structure


def structure_to_arrays(structure):
    """(cell Å, positions Å, symbols, kind names) of a StructureData."""
    cell = np.array(structure.cell, dtype=float)
    positions = np.array([site.position for site in structure.sites], dtype=float)
    kind_names = [site.kind_name for site in structure.sites]
    symbols = [structure.get_kind(name).symbol for name in kind_names]
    return cell, positions, symbols, kind_names
