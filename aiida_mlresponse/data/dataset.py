"""`DatasetData`: the arrays a model trains on, one node, linked by provenance to every label."""

from __future__ import annotations

from aiida import orm

from aiida_mlresponse.data.schema import get_schema, read_npz, write_npz


class DatasetData(orm.ArrayData):
    """Rows of one dataset kind (`data.schema`: 'response' for displaced polar solids, 'mg_strain' for
    strained Mg), one per configuration, with the units of the kind's schema.

    Arrays live in the repository, not in attributes; `kind`, `units` and `size` are attributes.
    """

    # The uuids of the ABINIT runs behind the rows: a dataset remade from cached runs (a campaign launched again) has
    # other uuids but the same labels, so a training on it must still be taken from the cache.
    _hash_ignored_attributes = ('calculations',)

    def set_rows(self, kind: str, arrays: dict) -> None:
        """Store `arrays` after checking them against the schema of `kind` (a `SchemaError` names the column)."""
        schema = get_schema(kind)
        arrays = schema.cast(arrays)
        for name, value in arrays.items():
            self.set_array(name, value)
        self.base.attributes.set('kind', kind)
        self.base.attributes.set('units', schema.units(arrays))
        self.base.attributes.set('size', len(arrays['configuration_index']))

    @property
    def kind(self) -> str:
        return self.base.attributes.get('kind')

    @property
    def units(self) -> dict:
        return self.base.attributes.get('units')

    @property
    def size(self) -> int:
        return self.base.attributes.get('size')

    def column_names(self, required_only: bool = False) -> list[str]:
        """The stored columns; with `required_only` without the schema's optional ones (the Mg fields)."""
        optional = set(get_schema(self.kind).optional) if required_only else set()
        return [name for name in self.get_arraynames() if name not in optional]

    def rows(self, required_only: bool = False) -> dict:
        """name -> array of every column (of `column_names(required_only)`)."""
        return {name: self.get_array(name) for name in self.column_names(required_only)}

    def extra_attributes(self) -> dict:
        """The node attributes that are not the arrays' bookkeeping (symbols, calculations, source, ...)."""
        skip = {'kind', 'units', 'size'}
        return {k: v for k, v in self.base.attributes.all.items() if not k.startswith('array|') and k not in skip}

    def export_npz(self, path, required_only: bool = False):
        """Write the dataset file `aiida-mlresponse dataset import` and the training entry point read.
        `required_only` leaves out the schema's optional columns (the Mg fields: a compact file of the scalars)."""
        return write_npz(path, self.kind, self.rows(required_only), {**self.extra_attributes(), 'uuid': self.uuid})

    @classmethod
    def from_npz(cls, path) -> 'DatasetData':
        """An unstored node from a dataset file; refuses a file that does not match its kind's schema."""
        kind, arrays, attributes = read_npz(path)
        node = cls()
        node.set_rows(kind, arrays)
        for key, value in attributes.items():
            node.base.attributes.set('source_uuid' if key == 'uuid' else key, value)
        return node


def dataset_from_radnet_h5(path, indices=None) -> DatasetData:
    """A 'response' DatasetData from the radnet paper's HDF5 layout (P branch fixed), e.g. to train on it."""
    import pathlib

    import numpy as np

    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5
    from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

    data = load_radnet_h5(path)
    rows = np.arange(len(data)) if indices is None else np.asarray(indices)
    dataset = DatasetData()
    dataset.base.attributes.set('atomic_numbers', [int(z) for z in data.numbers])
    dataset.base.attributes.set('source', pathlib.Path(path).name)
    dataset.set_rows('response', {
        'positions': data.positions[rows] * BOHR_TO_ANGSTROM,
        'cells': np.repeat(data.cell[None] * BOHR_TO_ANGSTROM, len(rows), axis=0),
        'polarization': data.polarization[rows],
        'dielectric_tensor': data.dielectric[rows],
        'configuration_index': rows,
    })
    return dataset
