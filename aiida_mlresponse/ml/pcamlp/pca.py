"""PCA of a field over samples: the reduction the PCA-MLP committee learns coefficients in."""

from __future__ import annotations

import numpy as np


def fit_field_pca(samples: np.ndarray, n_components: int | float = 50, seed: int = 0):
    """PCA of one field over samples (N, n_points): (mean (n_points,), components (d, n_points), explained ratio).

    ``n_components`` an int is d; a float in (0, 1) picks the smallest d whose explained variance
    reaches that fraction (scikit-learn semantics). Float64. The same principal components as
    scikit-learn's full SVD, from the eigenvectors of the N x N Gram matrix (fields have far more
    points than there are samples: four 1000 x 20480 fields took 6.5 s of CPU this way, 33 s by the
    full SVD, on the shared 2-core machine), refined by
    one Rayleigh-Ritz step so the basis is orthonormal to machine precision. ``seed`` is unused
    (the method is deterministic); it stays for callers that pass it.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    mean = x.mean(axis=0)
    xc = x - mean
    n, p = xc.shape
    if n <= p:
        eigenvalues, vectors = np.linalg.eigh(xc @ xc.T)
        basis_of = lambda d: xc.T @ vectors[:, ::-1][:, :d]  # noqa: E731  (p, d), spans the top d
    else:
        eigenvalues, vectors = np.linalg.eigh(xc.T @ xc)
        basis_of = lambda d: vectors[:, ::-1][:, :d]  # noqa: E731
    eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
    total = float((xc**2).sum())
    if isinstance(n_components, (int, np.integer)):
        d = int(min(n_components, n, p))
    else:
        cumulative = np.cumsum(eigenvalues) / total
        d = int(min(np.searchsorted(cumulative, n_components, side='right') + 1, n, p))
    q = np.linalg.qr(basis_of(d))[0]
    # Rayleigh-Ritz: the principal directions inside span(q), ordered, exactly orthonormal
    _, singular, right = np.linalg.svd(xc @ q, full_matrices=False)
    components = right @ q.T
    return mean, components, singular**2 / total


def pca_project(samples, mean, components):
    """Coefficients (N, d) of samples (N, ...) in an orthonormal PCA basis."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    return (x - mean) @ components.T


def pca_reconstruct(coefficients, mean, components):
    """Fields (N, n_points) from coefficients (N, d)."""
    return mean + np.asarray(coefficients) @ components

