"""`DatasetData`: the arrays a model trains on, one node, linked by provenance to every label."""

from __future__ import annotations

from aiida import orm


class DatasetData(orm.ArrayData):
    """Arrays of equal first dimension (one row per configuration) with their units.

    `kind` says what the rows are ('response' for displaced polar solids, 'mg_strain' for strained
    Mg); `units` maps each array name to its unit. Arrays live in the repository, not in attributes.
    """

    def set_rows(self, kind: str, arrays: dict, units: dict) -> None:
        lengths = {name: len(value) for name, value in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f'every array must have one row per configuration, got {lengths}.')
        missing = set(arrays) - set(units)
        if missing:
            raise ValueError(f'no unit given for {sorted(missing)}.')
        for name, value in arrays.items():
            self.set_array(name, value)
        self.base.attributes.set('kind', kind)
        self.base.attributes.set('units', dict(units))
        self.base.attributes.set('size', next(iter(lengths.values())))

    @property
    def kind(self) -> str:
        return self.base.attributes.get('kind')

    @property
    def units(self) -> dict:
        return self.base.attributes.get('units')

    @property
    def size(self) -> int:
        return self.base.attributes.get('size')


def dataset_from_radnet_h5(path, indices=None) -> DatasetData:
    """A 'response' DatasetData from the radnet paper's HDF5 layout (P branch fixed), e.g. to train on it."""
    import numpy as np

    from aiida_mlresponse.ml.datasets import load_radnet_h5
    from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

    data = load_radnet_h5(path)
    rows = np.arange(len(data)) if indices is None else np.asarray(indices)
    dataset = DatasetData()
    dataset.base.attributes.set('atomic_numbers', [int(z) for z in data.numbers])
    dataset.base.attributes.set('source', str(path))
    dataset.set_rows('response', {
        'positions': data.positions[rows] * BOHR_TO_ANGSTROM,
        'cells': np.repeat(data.cell[None] * BOHR_TO_ANGSTROM, len(rows), axis=0),
        'polarization': data.polarization[rows],
        'dielectric_tensor': data.dielectric[rows],
    }, {'positions': 'angstrom', 'cells': 'angstrom', 'polarization': 'e/bohr^2', 'dielectric_tensor': 'dimensionless'})
    return dataset
