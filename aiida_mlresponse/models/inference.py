"""Inference with provenance: a calcfunction from (model, structures) to predicted arrays."""

from __future__ import annotations

import numpy as np
from aiida import orm
from ase.data import atomic_numbers
from aiida.engine import calcfunction

from aiida_mlresponse.data import structure_to_arrays
from aiida_mlresponse.ml.registry import predictor
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

UNITS = {
    'polarization': 'e/bohr^2', 'polarization_spread': 'e/bohr^2', 'dielectric_tensor': 'dimensionless',
    'dielectric_tensor_spread': 'dimensionless', 'born_charges': 'e',
}


def structures_to_batch(structures, metadata: dict):
    """Positions (n, N, 3) Bohr of structures that must share the model's cell and atom order."""
    cell = np.asarray(metadata['cell_bohr'])
    numbers = np.asarray(metadata['atomic_numbers'])
    positions = []
    for index, structure in enumerate(structures):
        s_cell, s_positions, symbols, _ = structure_to_arrays(structure)
        if not np.allclose(s_cell * ANGSTROM_TO_BOHR, cell, atol=1e-6):
            raise ValueError(f'structure {index} has another cell than the one the model was trained on.')
        if [atomic_numbers[s] for s in symbols] != numbers.tolist():
            raise ValueError(f'structure {index} has another atom list than the one the model was trained on.')
        positions.append(s_positions * ANGSTROM_TO_BOHR)
    return np.asarray(positions), cell, numbers


@calcfunction
def predict_with_model(model, with_born_charges, **structures):
    """Committee predictions (mean, spread, optionally Z*) for `structures`, in their key order, by the predictor
    of the model's kind (`ml.registry`; for a radnet committee `radnet.predict.predict_response`: batched values,
    Z* per structure without autograd, small cells on one torch thread)."""
    predict = predictor(model.kind)
    committee, payload = model.load()
    keys = sorted(structures)
    positions, cell, numbers = structures_to_batch([structures[k] for k in keys], payload['metadata'])
    arrays = predict(committee, payload['metadata'], positions, cell, numbers, with_born_charges.value)
    result = orm.ArrayData()
    for name, value in arrays.items():
        result.set_array(name, np.asarray(value))
    result.base.attributes.set('structures', keys)
    result.base.attributes.set('units', {name: UNITS[name] for name in arrays})
    return result
