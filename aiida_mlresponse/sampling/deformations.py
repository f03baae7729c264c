"""Deformations D = (λa, λb, λc, θa, θb, θc) of the Mg reference cell (seed 002's sampling).

Random mode: each component from a normal distribution around the reference, truncated at 2σ,
so λ ∈ [1 - 2σ_λ, 1 + 2σ_λ] and θ ∈ [90° - 2σ_θ, 90° + 2σ_θ]; the paper's ranges λ ∈ [0.9, 1.1]
and θ ∈ [84°, 96°] are σ_λ = 0.05 and σ_θ = 3°. Path mode: D along prescribed strain-tensor steps,
for stress-strain curves. Angles in degrees, as in `physics.strain`.
"""

from __future__ import annotations

import numpy as np

from ..physics.strain import (
    REFERENCE_DEFORMATION,
    DeformationError,
    strain_to_deformation,
    validate_deformation,
)

PAPER_SIGMA_LAMBDA = 0.05
PAPER_SIGMA_THETA_DEG = 3.0


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float, size, cut: float = 2.0) -> np.ndarray:
    """Normal samples with |x - mean| <= cut·σ, by redrawing the ones outside (exact truncation)."""
    values = rng.normal(mean, sigma, size=size)
    outside = np.abs(values - mean) > cut * sigma
    while outside.any():
        values[outside] = rng.normal(mean, sigma, size=int(outside.sum()))
        outside = np.abs(values - mean) > cut * sigma
    return values


def sample_deformations(
    count: int,
    seed: int,
    sigma_lambda: float = PAPER_SIGMA_LAMBDA,
    sigma_theta_deg: float = PAPER_SIGMA_THETA_DEG,
) -> np.ndarray:
    """`count` deformations (count, 6); the same seed always gives the same set.

    Each of the six components is drawn independently, truncated at 2σ around D0 = (1,1,1,90,90,90).
    """
    if count < 1:
        raise ValueError(f'the number of deformations must be at least 1, got {count!r}.')
    for name, sigma in (('sigma_lambda', sigma_lambda), ('sigma_theta_deg', sigma_theta_deg)):
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f'`{name}` must be positive, got {sigma!r}.')
    if 2 * sigma_lambda >= 1.0:
        raise DeformationError(f'sigma_lambda = {sigma_lambda} allows λ <= 0 (truncation at 2σ); it must be < 0.5.')
    if 2 * sigma_theta_deg >= 90.0:
        raise DeformationError(f'sigma_theta_deg = {sigma_theta_deg} allows angles outside (0°, 180°).')
    rng = np.random.default_rng(seed)
    lambdas = truncated_normal(rng, 1.0, sigma_lambda, (count, 3))
    thetas = truncated_normal(rng, 90.0, sigma_theta_deg, (count, 3))
    deformations = np.concatenate([lambdas, thetas], axis=1)
    # Wide angle widths can give three angles that close no cell: say so rather than return them.
    validate_deformation(deformations)
    return deformations


def strain_path(direction, amplitudes, base_strain=None) -> np.ndarray:
    """D along ε(t) = base + t·direction for each amplitude t (len(amplitudes), 6).

    `direction` is a symmetric 3x3 strain tensor (e.g. only ε22 = 1 for uniaxial compression
    along x2 with negative amplitudes). The steps are linear strains as in METHODS.md.
    """
    direction = np.asarray(direction, dtype=float)
    if direction.shape != (3, 3) or not np.allclose(direction, direction.T):
        raise ValueError('the strain direction must be a symmetric 3x3 tensor.')
    base = np.zeros((3, 3)) if base_strain is None else np.asarray(base_strain, dtype=float)
    if base.shape != (3, 3) or not np.allclose(base, base.T):
        raise ValueError('the base strain must be a symmetric 3x3 tensor.')
    amplitudes = np.atleast_1d(np.asarray(amplitudes, dtype=float))
    strains = base[None] + amplitudes[:, None, None] * direction[None]
    diagonal = np.diagonal(strains, axis1=1, axis2=2)
    if np.any(1.0 + diagonal <= 0.0):
        bad = amplitudes[np.any(1.0 + diagonal <= 0.0, axis=1)][0]
        raise DeformationError(f'at amplitude {bad} a diagonal strain reaches 1 + ε_ii <= 0: λ <= 0, no cell.')
    deformations = strain_to_deformation(strains)
    if not np.all(np.isfinite(deformations)):
        raise DeformationError('the strain path leaves the range where D is defined.')
    validate_deformation(deformations)
    return deformations


__all__ = ['REFERENCE_DEFORMATION', 'sample_deformations', 'strain_path', 'truncated_normal', 'warm_start_coordinates']


def warm_start_coordinates(done_deformations, done_r, deformations) -> np.ndarray:
    """R(D) for `deformations` (M, 6) from a ridge fit through labelled rows (D, R), clipped to their range.

    The fit is linear, quadratic from 60 rows: leave-one-out on 80 relaxed Mg rows gave mean |ΔR1|
    0.0054 linear, 0.0034 quadratic. Relaxations started there end at the same R within tolmxf in
    fewer BFGS steps (5.9 against 8.2 from R = 0 on the fast campaign).
    """
    done_deformations, done_r = np.atleast_2d(done_deformations), np.atleast_2d(done_r)
    quadratic = len(done_deformations) >= 60

    def features(d):
        x = (np.atleast_2d(d) - REFERENCE_DEFORMATION) / [0.05, 0.05, 0.05, 3, 3, 3]
        columns = [np.ones(len(x))] + list(x.T)
        if quadratic:
            columns += [x[:, i] * x[:, j] for i in range(6) for j in range(i, 6)]
        return np.stack(columns, 1)

    design = features(done_deformations)
    coefficients = np.linalg.solve(design.T @ design + 0.1 * np.eye(design.shape[1]), design.T @ done_r)
    spanned = np.abs(done_r).max(0)
    return np.clip(features(deformations) @ coefficients, -spanned, spanned)
