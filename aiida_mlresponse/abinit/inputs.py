"""Writing ABINIT input files: structures exactly as given, variables validated before submission.

Everything here works on plain Python/numpy values so that it can be checked in `validate_inputs`
of a CalcJob (before anything is submitted) and reused by every ABINIT CalcJob of the package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

# Variables the CalcJobs write themselves from the structure, the pseudos and the run mode.
# A user giving them in `parameters` would silently fight the structure node, so it is an error.
RESERVED_VARIABLES = frozenset(
    {
        'acell', 'rprim', 'angdeg', 'scalecell', 'brvltt', 'xred', 'xcart', 'xangst', 'natom',
        'ntypat', 'typat', 'znucl', 'pseudos', 'pp_dirpath', 'ndtset', 'jdtset', 'udtset',
        'natrd', 'nobj', 'spgroup', 'outdata_prefix', 'indata_prefix', 'tmpdata_prefix',
        'output_file', 'ngkpt', 'nshiftk', 'shiftk', 'kptrlatt', 'kpt', 'nkpt', 'kptnrm', 'wtk',
    }
)
# ABINIT variable names: letters, digits and underscores, optionally a dataset index or ':'/'+'/'?'.
_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
_FORBIDDEN_TEXT = re.compile(r'[\n\r"\'#!]')

# Shortest allowed interatomic distance; closer atoms are an input error, not a configuration.
MIN_DISTANCE_ANGSTROM = 0.5


class AbinitInputError(ValueError):
    """An input that would produce a wrong or unreadable ABINIT input file."""


def base_name(name: str) -> str:
    """Strip a dataset suffix (``ecut2``, ``tolvrs:``) so that reserved names cannot sneak through."""
    match = re.match(r'^([a-z_]+?)(\d+|\d?\?\d?|:|\+|\*)$', name)
    return match.group(1) if match else name


def validate_parameters(parameters: Mapping, reserved: frozenset = RESERVED_VARIABLES) -> None:
    """Raise `AbinitInputError` for names or values that would break or override the input file."""
    for name, value in parameters.items():
        key = name.lower()
        if not _NAME_RE.match(base_name(key)) or not re.match(r'^[a-z0-9_:+?*]+$', key):
            raise AbinitInputError(f'`{name}` is not a valid ABINIT variable name.')
        if base_name(key) in reserved:
            raise AbinitInputError(
                f'`{name}` is set by the CalcJob from its inputs (structure, kpoints, pseudos); '
                'remove it from `parameters`.'
            )
        format_value(value, name=name)


def format_value(value, name: str = '') -> str:
    """One ABINIT value as text: numbers, booleans, strings, or (nested) sequences of them."""
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise AbinitInputError(f'`{name}` has a non-finite value {value!r}.')
        return repr(float(value))
    if isinstance(value, str):
        if _FORBIDDEN_TEXT.search(value):
            raise AbinitInputError(
                f'`{name}` = {value!r}: newlines, quotes, `#` and `!` would break the ABINIT input file.'
            )
        return value
    if isinstance(value, np.ndarray):
        return format_value(value.ravel().tolist(), name=name)
    if isinstance(value, Sequence):
        if len(value) == 0:
            raise AbinitInputError(f'`{name}` is an empty list.')
        return ' '.join(format_value(item, name=name) for item in value)
    raise AbinitInputError(f'`{name}` has a value of unsupported type {type(value).__name__}.')


def write_input(variables: Mapping) -> str:
    """The text of an ABINIT input file, one variable per line, in the given order."""
    lines = []
    for name, value in variables.items():
        text = format_value(value, name=name)
        if isinstance(value, str) and name in ('pseudos', 'pp_dirpath', 'indata_prefix', 'outdata_prefix', 'tmpdata_prefix'):
            text = f'"{value}"'
        lines.append(f'{name} {text}')
    return '\n'.join(lines) + '\n'


def validate_cell_and_positions(cell_angstrom, positions_angstrom, pbc=(True, True, True)) -> None:
    """Raise `AbinitInputError` for a non-3D cell or overlapping atoms (periodic images included)."""
    cell = np.asarray(cell_angstrom, dtype=float)
    if not all(pbc):
        raise AbinitInputError(f'the structure must be periodic in three dimensions, got pbc={tuple(pbc)}.')
    volume = abs(np.linalg.det(cell))
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths < 1e-8) or volume < 1e-6 * np.prod(np.maximum(lengths, 1e-8)):
        raise AbinitInputError(f'the cell is not three-dimensional (volume {volume:.3g} Å^3).')
    positions = np.asarray(positions_angstrom, dtype=float)
    dmin, pair = minimum_distance(cell, positions)
    if dmin < MIN_DISTANCE_ANGSTROM:
        raise AbinitInputError(
            f'atoms {pair[0]} and {pair[1]} overlap: {dmin:.3f} Å apart (minimum {MIN_DISTANCE_ANGSTROM} Å).'
        )


def minimum_distance(cell, positions) -> tuple[float, tuple[int, int]]:
    """Shortest distance between two atoms, or an atom and a periodic image of any atom."""
    cell = np.asarray(cell, dtype=float)
    frac = np.linalg.solve(cell.T, np.asarray(positions, dtype=float).T).T
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    best, pair = np.inf, (0, 0)
    natom = len(frac)
    for a in range(natom):
        delta = frac[a] - frac  # (natom, 3)
        delta -= np.round(delta)
        vectors = (delta[:, None, :] + shifts[None, :, :]) @ cell  # (natom, 27, 3)
        dist = np.linalg.norm(vectors, axis=-1)
        dist[a, 13] = np.inf  # the atom itself, zero shift
        b, _ = np.unravel_index(np.argmin(dist), dist.shape)
        if dist.min() < best:
            best, pair = float(dist.min()), (a, int(b))
    return best, pair


def structure_variables(cell_angstrom, positions_angstrom, kind_names, kind_order, znucl) -> dict:
    """ABINIT variables for a structure written exactly as given (same cell, orientation, atom order).

    `kind_names` is the kind of each site, `kind_order` the kinds in `typat` order and `znucl`
    their atomic numbers. The cell goes in as `rprim` in Bohr with `acell 3*1`, positions as
    reduced coordinates, unwrapped, so ABINIT neither rotates nor symmetrizes anything.
    """
    cell_bohr = np.asarray(cell_angstrom, dtype=float) * ANGSTROM_TO_BOHR
    positions_bohr = np.asarray(positions_angstrom, dtype=float) * ANGSTROM_TO_BOHR
    xred = np.linalg.solve(cell_bohr.T, positions_bohr.T).T
    typat = [kind_order.index(name) + 1 for name in kind_names]
    return {
        'natom': len(kind_names),
        'ntypat': len(kind_order),
        'typat': typat,
        'znucl': list(znucl),
        'acell': [1.0, 1.0, 1.0],
        'rprim': cell_bohr.tolist(),
        'xred': xred.tolist(),
        # The cell and atoms are the user's; ABINIT must not reduce or reject a non-primitive cell.
        'chkprim': 0,
        # A displaced cell can keep a symmetry whose fractional translation does not fit the FFT grid;
        # ABINIT then stops unless told to accept it (the structure must not be moved to please it).
        'chksymtnons': 0,
    }
