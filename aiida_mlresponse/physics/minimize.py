"""Gradient descent with Barzilai-Borwein steps (Barzilai & Borwein 1988), generic.

Used to relax the free strain components under uniaxial stress (seed 002, Sec. 4.5). The plain
BB iteration is not monotone; a non-monotone Armijo safeguard (Grippo-Lampariello-Lucidi, as in
Raydan 1997) keeps it convergent on non-quadratic energies without losing the BB speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class MinimizeResult:
    x: np.ndarray
    fun: float
    grad: np.ndarray
    n_iter: int
    n_eval: int
    converged: bool


def barzilai_borwein(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0,
    *,
    gtol: float = 1e-8,
    max_iter: int = 1000,
    initial_step: float = 1e-3,
    max_step: float = 1e6,
    memory: int = 10,
    armijo: float = 1e-4,
    max_backtracks: int = 30,
    max_move: float | None = None,
) -> MinimizeResult:
    """Minimize ``f`` given ``fun_and_grad(x) -> (f, grad)``; stop when ``max|grad| < gtol``.

    Step lengths alternate between the two BB formulas (s.s / s.y and s.y / y.y); where the
    curvature s.y is not positive the step falls back to ``max_step`` and the line search decides.
    ``max_move`` caps the largest component of each move: without it such a step, backtracked from
    ``max_step``, can land in a far basin whose energy is below the non-monotone reference, and a
    relaxation meant to follow a local minimum jumps to another one.
    """
    x = np.array(x0, dtype=float)
    f, g = fun_and_grad(x)
    f, g = float(f), np.asarray(g, dtype=float)
    history = [f]
    step = initial_step
    n_eval = 1
    for iteration in range(max_iter):
        if np.max(np.abs(g)) < gtol:
            return MinimizeResult(x, f, g, iteration, n_eval, True)
        f_ref = max(history[-memory:])
        decrease = float(g @ g)
        t = step
        if max_move is not None:
            t = min(t, max_move / max(float(np.max(np.abs(g))), 1e-300))
        for _ in range(max_backtracks):
            x_new = x - t * g
            f_new, g_new = fun_and_grad(x_new)
            n_eval += 1
            f_new = float(f_new)
            if np.isfinite(f_new) and f_new <= f_ref - armijo * t * decrease:
                break
            t *= 0.5
        else:
            return MinimizeResult(x, f, g, iteration, n_eval, False)
        g_new = np.asarray(g_new, dtype=float)
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 0:
            step = float(s @ s) / sy if iteration % 2 == 0 else sy / float(y @ y)
            step = min(step, max_step)
        else:
            step = max_step
        x, f, g = x_new, f_new, g_new
        history.append(f)
    return MinimizeResult(x, f, g, max_iter, n_eval, bool(np.max(np.abs(g)) < gtol))
