"""The one place where the columns of an 'mg_strain' dataset (`aiida_mlresponse.data.schema`) get the PCA-MLP's
names: D, F, U, minus_TS, R and the fields, plus the cell, volume, stress and configuration index.
"""

from __future__ import annotations

import numpy as np

from aiida_mlresponse.data.schema import SchemaError, get_schema, read_npz

DATASET_KIND = 'mg_strain'

#: model name -> mg_strain column
COLUMNS = {'D': 'deformation', 'F': 'free_energy', 'U': 'band_energy', 'minus_TS': 'entropy_energy', 'R': 'R',
           'rho': 'rho', 'phi': 'phi', 'u': 'u', 's': 's', 'stress': 'stress', 'cell': 'cell', 'volume': 'volume',
           'configuration_index': 'configuration_index'}


def model_arrays(arrays: dict) -> dict:
    """The dataset's columns under the model's names (columns the dataset lacks are left out)."""
    return {name: np.asarray(arrays[column]) for name, column in COLUMNS.items() if column in arrays}


def units(names) -> dict:
    """Model name -> unit, from the dataset schema."""
    columns = get_schema(DATASET_KIND).columns
    return {name: columns[COLUMNS[name]].unit for name in names}


def read_dataset(path) -> dict:
    """The model-named arrays of a dataset file (`aiida-mlresponse dataset export`), schema checked."""
    kind, arrays, _ = read_npz(path)
    if kind != DATASET_KIND:
        raise SchemaError(f'{path}: a `{kind}` dataset; the PCA-MLP trains on `{DATASET_KIND}`.')
    return model_arrays(arrays)
