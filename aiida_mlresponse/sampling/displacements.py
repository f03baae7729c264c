"""Gaussian displacements of every atom around a reference structure (seed 000's sampling)."""

from __future__ import annotations

import numpy as np


def sample_displacements(positions, sigma: float, count: int, seed: int, freeze_z: bool = False) -> np.ndarray:
    """`count` displaced copies of `positions` (n, 3), each coordinate shifted by N(0, σ²).

    σ is in the unit of `positions`. With `freeze_z` the z coordinates are left as they are, as
    for 200 of the paper's GaAs configurations. The same seed always gives the same set.
    """
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f'the displacement width σ must be positive, got {sigma!r}.')
    if count < 1:
        raise ValueError(f'the number of configurations must be at least 1, got {count!r}.')
    positions = np.asarray(positions, dtype=float)
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0.0, sigma, size=(count, *positions.shape))
    if freeze_z:
        shifts[..., 2] = 0.0
    return positions[None] + shifts
