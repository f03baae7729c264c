"""One schema per dataset kind: the column names, units, dtypes and shapes of every `DatasetData`.

The collect calcfunctions, the training entry point, the model loaders and `aiida-mlresponse
dataset export/import` all read this module, so a column has one name and one unit everywhere.
It imports no aiida: the training entry point runs it on a compute node.

Shapes use symbols that must agree across the columns of one dataset: `N` (rows, one per
configuration), `atoms`, and `g1 g2 g3` (the FFT grid of the fields).

The exchange file is an `.npz` with one array per column and a JSON header under `__header__`
(kind, units, node attributes); it loads with `allow_pickle=False`, so reading one never runs code.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping

import numpy as np

HEADER = '__header__'


class SchemaError(ValueError):
    """A dataset does not match its kind's schema (the message names the column)."""


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    unit: str
    dtype: str  # the dtype stored: float64, float32 or int64
    shape: tuple  # symbols (N, atoms, g1, g2, g3) or fixed sizes
    doc: str
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class Schema:
    kind: str
    doc: str
    columns: dict  # name -> Column

    @property
    def required(self) -> list[str]:
        return [name for name, column in self.columns.items() if not column.optional]

    @property
    def optional(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.optional]

    def units(self, names=None) -> dict:
        """name -> unit for `names` (default: every column)."""
        names = self.columns if names is None else names
        return {name: self.columns[name].unit for name in names}

    def check(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise `SchemaError` naming the first column that is missing, unknown, or of the wrong dtype or shape."""
        missing = [name for name in self.required if name not in arrays]
        if missing:
            raise SchemaError(f'{self.kind} dataset: required column `{missing[0]}` is missing '
                              f'(required: {", ".join(self.required)}).')
        sizes: dict = {}
        for name, value in arrays.items():
            column = self.columns.get(name)
            if column is None:
                raise SchemaError(f'{self.kind} dataset: unknown column `{name}` '
                                  f'(known: {", ".join(self.columns)}).')
            value = np.asarray(value)
            expected_kind = np.dtype(column.dtype).kind
            if value.dtype.kind != expected_kind and not (expected_kind == 'f' and value.dtype.kind in 'iu'):
                raise SchemaError(f'{self.kind} dataset: column `{name}` has dtype {value.dtype}, expected {column.dtype}.')
            if value.ndim != len(column.shape):
                raise SchemaError(f'{self.kind} dataset: column `{name}` has shape {value.shape}, '
                                  f'expected ({", ".join(map(str, column.shape))}).')
            for axis, (symbol, size) in enumerate(zip(column.shape, value.shape)):
                if isinstance(symbol, int):
                    if size != symbol:
                        raise SchemaError(f'{self.kind} dataset: column `{name}` has {size} entries on axis {axis}, '
                                          f'expected {symbol} (shape {value.shape}).')
                elif sizes.setdefault(symbol, (size, name))[0] != size:
                    other_size, other = sizes[symbol]
                    raise SchemaError(f'{self.kind} dataset: column `{name}` has {symbol} = {size} on axis {axis}, '
                                      f'but `{other}` has {symbol} = {other_size}.')
        if sizes.get('N', (1,))[0] < 1:
            raise SchemaError(f'{self.kind} dataset: no rows.')

    def cast(self, arrays: Mapping[str, np.ndarray]) -> dict:
        """The arrays checked and converted to the stored dtypes."""
        self.check(arrays)
        return {name: np.asarray(value, dtype=self.columns[name].dtype) for name, value in arrays.items()}


def _columns(*columns: Column) -> dict:
    return {column.name: column for column in columns}


INDEX = Column('configuration_index', 'index', 'int64', ('N',),
               'Index of the configuration in the list the labelling work chain was given.')

SCHEMAS = {
    'response': Schema('response', 'Displaced polar solids (GaAs, cubic BN): P by Berry phase, ε∞ by DFPT.', _columns(
        Column('positions', 'angstrom', 'float64', ('N', 'atoms', 3), 'Cartesian positions.'),
        Column('cells', 'angstrom', 'float64', ('N', 3, 3), 'Cell vectors as rows.'),
        Column('polarization', 'e/bohr^2', 'float64', ('N', 3), 'Electronic + ionic polarization, branch fixed against the reference.'),
        Column('dielectric_tensor', 'dimensionless', 'float64', ('N', 3, 3), 'Electronic dielectric tensor ε∞.'),
        Column('born_charges', 'e', 'float64', ('N', 'atoms', 3, 3), 'Born effective charges Z*[atom, E, τ].', optional=True),
        INDEX,
    )),
    'mg_strain': Schema('mg_strain', 'Strained hcp Mg, relaxed at fixed cell: energies, stress, positions and fields.', _columns(
        Column('deformation', 'lambda (1) x3, theta (deg) x3', 'float64', ('N', 6), 'D = (λa, λb, λc, θa, θb, θc).'),
        Column('free_energy', 'Ha', 'float64', ('N',), 'Free energy F = U - TS per cell.'),
        Column('band_energy', 'Ha', 'float64', ('N',), 'Internal energy U.'),
        Column('entropy_energy', 'Ha (-TS)', 'float64', ('N',), 'Smearing entropy term -TS.'),
        Column('fermi_energy', 'Ha', 'float64', ('N',), 'Fermi level.'),
        Column('volume', 'Bohr^3', 'float64', ('N',), 'Cell volume.'),
        Column('stress', 'Ha/Bohr^3', 'float64', ('N', 3, 3), 'Cauchy stress tensor, ABINIT sign (pressure = -trace/3).'),
        Column('R', 'reduced', 'float64', ('N', 3), 'Relaxed internal coordinates of the symmetric form.'),
        Column('xred', 'reduced', 'float64', ('N', 'atoms', 3), 'Relaxed reduced positions.'),
        Column('cell', 'Bohr', 'float64', ('N', 3, 3), 'Cell vectors as rows.'),
        Column('rho', 'e/Bohr^3', 'float32', ('N', 'g1', 'g2', 'g3'), 'Electron density.', optional=True),
        Column('phi', 'Ha', 'float32', ('N', 'g1', 'g2', 'g3'), 'Coulomb (Hartree + local) potential.', optional=True),
        Column('u', 'Ha/Bohr^3', 'float32', ('N', 'g1', 'g2', 'g3'), 'Band-energy density.', optional=True),
        Column('s', '1/Bohr^3', 'float32', ('N', 'g1', 'g2', 'g3'), 'Entropy density.', optional=True),
        INDEX,
    )),
}


def get_schema(kind: str) -> Schema:
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise SchemaError(f'unknown dataset kind `{kind}`; known kinds: {", ".join(SCHEMAS)}.') from None


def write_npz(path, kind: str, arrays: Mapping[str, np.ndarray], attributes: Mapping | None = None) -> pathlib.Path:
    """Write a checked dataset file (through a temporary file, so a reader never sees half of it)."""
    schema = get_schema(kind)
    arrays = schema.cast(arrays)
    header = {'kind': kind, 'units': schema.units(arrays), 'attributes': dict(attributes or {})}
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + '.tmp.npz')
    np.savez(tmp, **arrays, **{HEADER: np.array(json.dumps(header))})
    tmp.replace(path)
    return path


def read_npz(path) -> tuple[str, dict, dict]:
    """(kind, arrays, attributes) of a dataset file; refuses a file that does not match its kind's schema."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if HEADER not in data.files:
                raise SchemaError(f'{path.name}: not a dataset file (no `{HEADER}` entry).')
            header = json.loads(str(data[HEADER]))
            arrays = {name: data[name] for name in data.files if name != HEADER}
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f'{path.name}: not a readable .npz dataset file ({exc}).') from None
    kind = header.get('kind')
    schema = get_schema(kind)
    schema.check(arrays)
    stated = header.get('units', {})
    for name, unit in stated.items():
        if name in schema.columns and unit != schema.columns[name].unit:
            raise SchemaError(f'{path.name}: column `{name}` is in {unit}, the {kind} schema says {schema.columns[name].unit}.')
    return kind, arrays, header.get('attributes', {})
