"""Accuracy measures of the PCA-MLP outputs: field NRMSE (seed eq. 12) and the position error of R."""

from __future__ import annotations

import numpy as np


def nrmse(predicted, true, axis=None):
    """RMSE divided by the range (max - min) of the truth, per sample over the grid (seed eq. 12).

    For arrays (N, ...) the result is (N,): one value per configuration.
    """
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    p, t = p.reshape(len(t), -1), t.reshape(len(t), -1)
    rmse = np.sqrt(np.mean((p - t) ** 2, axis=1))
    return rmse / (t.max(axis=1) - t.min(axis=1))


def position_error(r_pred, r_true, cells) -> np.ndarray:
    """Cartesian displacement error (Bohr) of the basis atoms, (N,): |ΔR · cell|, the same for all four."""
    delta = np.asarray(r_pred, dtype=float) - np.asarray(r_true, dtype=float)
    return np.linalg.norm(np.einsum('ni,nij->nj', delta, np.asarray(cells, dtype=float)), axis=1)
