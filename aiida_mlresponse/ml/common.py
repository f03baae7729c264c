"""Helpers both model families use: per-column standardization, the Voigt order of symmetric tensors and torch's
thread count.

The Voigt order (xx, yy, zz, yz, xz, xy) is `physics.stress.VOIGT_PAIRS`; the torch map from six components
to a tensor is `physics.stress.voigt_to_tensor`. Here are the numpy fronts the model code needs.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..physics.stress import VOIGT_PAIRS
from ..physics.stress import voigt_to_tensor as _voigt_to_tensor

__all__ = ['VOIGT_PAIRS', 'standardization', 'tensor_to_voigt', 'torch_threads', 'voigt_to_tensor']


def standardization(values, min_std: float = 0.0):
    """Mean and standard deviation per column of (N, ...) values; a std <= `min_std` (a constant column) becomes 1."""
    values = np.asarray(values, dtype=np.float64)
    mean, std = values.mean(axis=0), values.std(axis=0)
    return mean, np.where(std > min_std, std, 1.0)


def tensor_to_voigt(tensors) -> np.ndarray:
    """(..., 3, 3) tensors -> (..., 6) in Voigt order, of their symmetric part.

    The published ε∞ are symmetric only to the printed digits (|ε_ij - ε_ji| <= 5e-8 for GaAs).
    """
    tensors = np.asarray(tensors)
    tensors = 0.5 * (tensors + np.swapaxes(tensors, -1, -2))
    return np.stack([tensors[..., i, j] for i, j in VOIGT_PAIRS], axis=-1)


def voigt_to_tensor(voigt) -> np.ndarray:
    """(..., 6) in Voigt order -> (..., 3, 3) symmetric tensors, numpy in and out (same dtype)."""
    return _voigt_to_tensor(torch.from_numpy(np.ascontiguousarray(voigt))).numpy()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` inside (None: left as they are), restored on exit."""
    previous = torch.get_num_threads()
    try:
        if threads is not None and threads != previous:
            torch.set_num_threads(threads)
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
