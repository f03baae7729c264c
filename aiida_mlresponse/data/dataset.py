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
