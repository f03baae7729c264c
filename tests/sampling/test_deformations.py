"""Deformation sampler: ranges, truncation, seeding, strain paths and bad input."""

import numpy as np
import pytest

from aiida_mlresponse.physics.strain import DeformationError, deformation_to_strain
from aiida_mlresponse.sampling.deformations import sample_deformations, strain_path


def test_paper_ranges_and_truncation():
    d = sample_deformations(4000, seed=7)
    assert d.shape == (4000, 6)
    assert d[:, :3].min() >= 0.9 and d[:, :3].max() <= 1.1
    assert d[:, 3:].min() >= 84.0 and d[:, 3:].max() <= 96.0
    # a normal truncated at 2σ has standard deviation 0.880 σ; means at the reference
    np.testing.assert_allclose(d[:, :3].std(axis=0), 0.05 * 0.880, rtol=0.06)
    np.testing.assert_allclose(d[:, 3:].std(axis=0), 3.0 * 0.880, rtol=0.06)
    np.testing.assert_allclose(d.mean(axis=0), [1, 1, 1, 90, 90, 90], atol=0.15)


def test_seeded():
    np.testing.assert_array_equal(sample_deformations(5, seed=3), sample_deformations(5, seed=3))
    assert not np.allclose(sample_deformations(5, seed=3), sample_deformations(5, seed=4))


def test_strain_path_uniaxial():
    eps = np.zeros((3, 3))
    eps[1, 1] = 1.0
    d = strain_path(eps, [-0.1, -0.05, 0.0])
    np.testing.assert_allclose(d[:, 1], [0.9, 0.95, 1.0])
    np.testing.assert_allclose(d[:, [0, 2]], 1.0)
    np.testing.assert_allclose(d[:, 3:], 90.0)
    np.testing.assert_allclose(deformation_to_strain(d)[:, 1, 1], [-0.1, -0.05, 0.0], atol=1e-14)


def test_strain_path_shear_changes_the_angle():
    eps = np.zeros((3, 3))
    eps[0, 1] = eps[1, 0] = 1.0
    d = strain_path(eps, [0.02])
    assert d[0, 5] == pytest.approx(90.0 - np.degrees(0.04))


def test_bad_input():
    with pytest.raises(ValueError, match='at least 1'):
        sample_deformations(0, seed=1)
    with pytest.raises(ValueError, match='positive'):
        sample_deformations(3, seed=1, sigma_lambda=-0.1)
    with pytest.raises(DeformationError, match='λ <= 0'):
        sample_deformations(3, seed=1, sigma_lambda=0.6)
    with pytest.raises(DeformationError, match='outside'):
        sample_deformations(3, seed=1, sigma_theta_deg=50.0)
    with pytest.raises(ValueError, match='symmetric'):
        strain_path(np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]]), [0.1])
    eps = np.zeros((3, 3))
    eps[0, 0] = 1.0
    with pytest.raises(DeformationError, match='λ <= 0'):
        strain_path(eps, [-0.5, -1.5])  # 1 + ε11 < 0 turns the cell inside out
    shear = np.array([[0, 1, 1], [1, 0, -1], [1, -1, 0]], dtype=float)
    with pytest.raises(DeformationError, match='Gram determinant'):
        strain_path(shear, [0.1, 0.7])  # θa ≈ 170°, θb = θc ≈ 10°: no cell has these angles


def test_warm_start_recovers_a_smooth_r_of_d_and_stays_in_range():
    from aiida_mlresponse.sampling.deformations import sample_deformations, warm_start_coordinates

    d = sample_deformations(80, seed=3)
    x = (d - [1, 1, 1, 90, 90, 90]) / [0.05, 0.05, 0.05, 3, 3, 3]
    r = np.stack([0.01 * x[:, 0] + 0.002 * x[:, 1] * x[:, 4], -0.004 * x[:, 3], 0.001 * x[:, 2] ** 2], 1)
    new = sample_deformations(20, seed=4)
    xn = (new - [1, 1, 1, 90, 90, 90]) / [0.05, 0.05, 0.05, 3, 3, 3]
    expected = np.stack([0.01 * xn[:, 0] + 0.002 * xn[:, 1] * xn[:, 4], -0.004 * xn[:, 3], 0.001 * xn[:, 2] ** 2], 1)
    predicted = warm_start_coordinates(d, r, new)  # quadratic from 60 rows: the quadratic R(D) is recovered
    assert np.abs(predicted - np.clip(expected, -np.abs(r).max(0), np.abs(r).max(0))).max() < 1e-2 * np.abs(r).max()  # ridge 0.1 biases it by ~0.3 %
    assert np.all(np.abs(warm_start_coordinates(d[:20], r[:20], new * [1.5, 1, 1, 1, 1, 1])) <= np.abs(r[:20]).max(0) + 1e-15)
