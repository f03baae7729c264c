"""Barzilai-Borwein minimizer on problems with known minima."""

import numpy as np

from aiida_mlresponse.physics.minimize import barzilai_borwein


def test_quadratic_reaches_the_known_minimum():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    hessian = q @ np.diag([0.5, 1.0, 2.0, 5.0, 20.0, 100.0]) @ q.T  # condition number 200
    b = rng.normal(size=6)
    expected = np.linalg.solve(hessian, b)

    def fun(x):
        return 0.5 * x @ hessian @ x - b @ x, hessian @ x - b

    result = barzilai_borwein(fun, np.zeros(6), gtol=1e-10, max_iter=2000)
    assert result.converged
    np.testing.assert_allclose(result.x, expected, atol=1e-9)
    assert result.fun <= fun(expected)[0] + 1e-12
    # BB is much faster than fixed-step descent, whose iteration count scales with the condition number
    assert result.n_iter < 300


def test_rosenbrock_with_nonmonotone_safeguard():
    def fun(x):
        f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
        return f, g

    result = barzilai_borwein(fun, np.array([-1.2, 1.0]), gtol=1e-8, max_iter=20000)
    assert result.converged
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-6)


def test_already_converged_start_returns_immediately():
    result = barzilai_borwein(lambda x: (float(x @ x), 2 * x), np.zeros(3))
    assert result.converged and result.n_iter == 0 and result.n_eval == 1


def test_max_move_caps_every_move():
    """A relaxation that must follow its own minimum never moves a component further than max_move at once."""
    visited = []

    def fun(x):
        visited.append(x.copy())
        return float(np.sum(np.cos(3 * x) + 0.1 * x**2)), -3 * np.sin(3 * x) + 0.2 * x

    result = barzilai_borwein(fun, np.array([0.3, -0.2]), gtol=1e-10, max_iter=5000, max_move=0.01)
    assert result.converged
    moves = np.abs(np.diff(np.array(visited), axis=0)).max(1)
    assert moves.max() <= 0.01 + 1e-12
    np.testing.assert_allclose(np.abs(result.x), np.pi / 3, atol=0.05)  # the minimum it started in, not a far one
