"""Predictions of a trained radnet committee for many structures: mean, spread and Born charges."""

from __future__ import annotations

import numpy as np

from aiida_mlresponse.ml.datasets import voigt_to_tensor
from aiida_mlresponse.ml.derivatives import born_charges


def predict_response(committee, metadata: dict, positions, cell, numbers, with_born_charges: bool = False) -> dict:
    """Committee mean and spread for configurations (n, N, 3) Bohr of one cell (3, 3) Bohr.

    Returns arrays with the units of `metadata['target']`: P (n, 3) e/Bohr² or ε∞ (n, 3, 3), their
    spreads (the members' standard deviation), and for a P model on request Z* (n, N, 3, 3) in e,
    by autograd through the density, acoustic sum rule imposed.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
    mean, spread = committee.predict_positions(positions, cell, numbers)
    target = metadata['target']
    out = {}
    if target == 'polarization':
        out['polarization'], out['polarization_spread'] = mean, spread
    else:
        out['dielectric_tensor'], out['dielectric_tensor_spread'] = voigt_to_tensor(mean), voigt_to_tensor(spread)
    if with_born_charges:
        if target != 'polarization':
            raise ValueError('Born charges need a polarization model; this model predicts the dielectric tensor.')
        volume = abs(np.linalg.det(cell))
        out['born_charges'] = np.stack([
            born_charges(committee.position_function(cell, numbers, config), config, volume=volume)
            for config in positions
        ])
    return out
