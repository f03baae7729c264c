"""Calibrated committee spreads: σ_cal = sqrt((a·σ)² + b²) per output component.

The members' standard deviation σ measures how much the fit would change with other training data (the
variance of the heads); it says nothing of the error every fit shares (label noise, what the heads cannot
represent). So the expected error is modelled per component c as a Gaussian of variance (a_c σ)² + b_c²,
a and b fitted on errors the committee did not train on: the out-of-fold residuals of the central heads
(`heads.fit_heads`) against the members' σ at those rows. The ratio b/a comes from the Gaussian likelihood
(a grid of ratios, a in closed form for each); then a and b are scaled together so a `coverage` fraction
(default 0.9) of those residuals lies within 2 σ_cal.

The calibration is stored in a model file's metadata (``spread_calibration``) and applied by
`predict.predict_response`; a model file without it returns the members' standard deviation as before.
"""

from __future__ import annotations

import numpy as np

#: b / (a · median σ) tried by the likelihood fit (0: no floor)
_RATIOS = np.concatenate([[0.0], np.logspace(-2, 2, 41)])


def fit_spread_calibration(residual, spread, coverage: float = 0.9, floor: float = 1e-300) -> dict:
    """{'scale': a (C,), 'floor': b (C,), 'coverage': coverage, 'rows': n} from residuals and spreads (n, C)."""
    residual, spread = np.asarray(residual, dtype=float), np.asarray(spread, dtype=float)
    if residual.shape != spread.shape or residual.ndim != 2 or len(residual) < 2:
        raise ValueError(f'need matching (n, C) residuals and spreads, n >= 2; got {residual.shape} and {spread.shape}')
    scales, floors = [], []
    for r, s in zip(residual.T, spread.T):
        r2 = r * r
        typical = max(float(np.median(s)), floor)
        best = None
        for ratio in _RATIOS:
            unit = s * s + (ratio * typical) ** 2  # variance / a²
            if unit.min() <= 0:
                continue
            a2 = float(np.mean(r2 / unit))
            nll = float(np.sum(np.log(max(a2, floor) * unit)))
            if best is None or nll < best[0]:
                best = (nll, np.sqrt(a2), ratio * typical * np.sqrt(a2))
        a, b = (best[1], best[2]) if best else (0.0, float(np.sqrt(np.mean(r2))))
        sigma = np.sqrt((a * s) ** 2 + b**2)
        factor = float(np.quantile(np.abs(r) / np.maximum(sigma, floor), coverage)) / 2.0
        scales.append(float(a * factor))
        floors.append(float(b * factor))
    return {'scale': scales, 'floor': floors, 'coverage': float(coverage), 'rows': int(len(residual))}


def apply_spread_calibration(spread, calibration: dict | None) -> np.ndarray:
    """σ_cal = sqrt((a σ)² + b²) over the last axis (the components); None: σ unchanged."""
    spread = np.asarray(spread, dtype=float)
    if not calibration:
        return spread
    scale, floor = np.asarray(calibration['scale'], dtype=float), np.asarray(calibration['floor'], dtype=float)
    return np.sqrt((scale * spread) ** 2 + floor**2)
