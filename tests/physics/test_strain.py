"""D <-> cell and ε <-> D maps of the Mg reference cell, in numpy and torch."""

import math

import numpy as np
import pytest
import torch

from aiida_mlresponse.physics import strain
from aiida_mlresponse.physics.crystals import MG_ACELL_BOHR


def random_deformations(n, seed=0):
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.9, 1.1, size=(n, 3))
    ang = rng.uniform(84.0, 96.0, size=(n, 3))
    return np.concatenate([lam, ang], axis=1)


def test_identity_at_reference():
    cell = strain.deformation_to_cell(strain.REFERENCE_DEFORMATION)
    np.testing.assert_allclose(cell, np.diag(MG_ACELL_BOHR), atol=1e-12)
    np.testing.assert_allclose(strain.deformation_to_strain(strain.REFERENCE_DEFORMATION), np.zeros((3, 3)), atol=1e-14)
    np.testing.assert_allclose(strain.strain_to_deformation(np.zeros((3, 3))), strain.REFERENCE_DEFORMATION, atol=1e-12)


def test_cell_has_the_lengths_and_angles_of_d():
    d = np.array([1.05, 0.93, 1.02, 85.0, 94.0, 91.5])
    cell = strain.deformation_to_cell(d)
    a, b, c = cell
    np.testing.assert_allclose(np.linalg.norm(cell, axis=1), d[:3] * MG_ACELL_BOHR, rtol=1e-13)
    angle = lambda u, v: math.degrees(math.acos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
    assert angle(b, c) == pytest.approx(85.0, abs=1e-10)
    assert angle(a, c) == pytest.approx(94.0, abs=1e-10)
    assert angle(a, b) == pytest.approx(91.5, abs=1e-10)
    # lower-triangular orientation: a along x, b in the xy plane
    assert a[1] == a[2] == b[2] == 0.0


def test_round_trips_numpy_batched():
    d = random_deformations(50)
    np.testing.assert_allclose(strain.cell_to_deformation(strain.deformation_to_cell(d)), d, atol=1e-10)
    np.testing.assert_allclose(strain.strain_to_deformation(strain.deformation_to_strain(d)), d, atol=1e-12)
    eps = strain.deformation_to_strain(d)
    np.testing.assert_allclose(eps, np.swapaxes(eps, -1, -2))


def test_cell_to_deformation_ignores_orientation():
    d = np.array([0.95, 1.08, 1.01, 88.0, 92.0, 86.0])
    cell = strain.deformation_to_cell(d)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    np.testing.assert_allclose(strain.cell_to_deformation(cell @ rotation.T), d, atol=1e-10)


def test_small_strain_matches_the_linear_form():
    """To first order, λa = 1 + ε11 and θa = 90° - 2ε23 (radians)."""
    eps = np.array([[1e-4, 2e-4, -1e-4], [2e-4, -3e-4, 5e-5], [-1e-4, 5e-5, 2e-4]])
    d = strain.strain_to_deformation(eps)
    np.testing.assert_allclose(d[:3], 1.0 + np.diag(eps), atol=1e-7)
    np.testing.assert_allclose(np.radians(90.0 - d[3:]), 2 * np.array([eps[1, 2], eps[0, 2], eps[0, 1]]), atol=1e-12)


def test_torch_agrees_with_numpy_and_differentiates():
    d = random_deformations(5, seed=1)
    td = torch.tensor(d, dtype=torch.float64)
    np.testing.assert_allclose(strain.deformation_to_cell(td).numpy(), strain.deformation_to_cell(d), atol=1e-12)
    np.testing.assert_allclose(strain.cell_to_deformation(strain.deformation_to_cell(td)).numpy(), d, atol=1e-10)

    eps = torch.tensor(strain.deformation_to_strain(d[0]), requires_grad=True)
    volume = strain.cell_volume(strain.deformation_to_cell(strain.strain_to_deformation(eps)))
    (grad,) = torch.autograd.grad(volume, eps)
    # finite-difference check of the whole chain ε -> D -> cell -> V
    h = 1e-6
    for i, j in [(0, 0), (1, 2), (0, 1)]:
        plus, minus = eps.detach().clone(), eps.detach().clone()
        plus[i, j] += h
        minus[i, j] -= h
        fd = (strain.cell_volume(strain.deformation_to_cell(strain.strain_to_deformation(plus)))
              - strain.cell_volume(strain.deformation_to_cell(strain.strain_to_deformation(minus)))) / (2 * h)
        assert grad[i, j].item() == pytest.approx(fd.item(), rel=1e-6)
    # at ε = 0, dV/dε_ii = V0 (only the diagonal stretches the volume to first order)
    eps0 = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    (g0,) = torch.autograd.grad(strain.cell_volume(strain.deformation_to_cell(strain.strain_to_deformation(eps0))), eps0)
    np.testing.assert_allclose(np.diag(g0.numpy()), np.prod(MG_ACELL_BOHR), rtol=1e-12)


@pytest.mark.parametrize(
    'bad, message',
    [
        ([0.0, 1, 1, 90, 90, 90], 'positive'),
        ([1, -0.1, 1, 90, 90, 90], 'positive'),
        ([1, 1, 1, 0.0, 90, 90], 'between 0° and 180°'),
        ([1, 1, 1, 90, 180.0, 90], 'between 0° and 180°'),
        ([1, 1, 1, 170, 10, 90], 'Gram determinant'),
        ([1, 1, 1, 120, 120, 120], 'Gram determinant'),
        ([1, 1, 1, 90, 90], 'six numbers'),
        ([1, 1, np.nan, 90, 90, 90], 'non-finite'),
    ],
)
def test_validation_rejects_cells_that_do_not_exist(bad, message):
    with pytest.raises(strain.DeformationError, match=message):
        strain.validate_deformation(bad)


def test_gram_determinant_positive_on_sampling_box():
    corners = np.array([[1, 1, 1, a, b, c] for a in (84, 96) for b in (84, 96) for c in (84, 96)], dtype=float)
    assert np.all(strain.gram_determinant(corners) > 0.9)
    strain.validate_deformation(corners)


def test_symmetric_form_round_trip_and_deviation():
    r = np.array([0.003, -0.012, 0.0071])
    xred = strain.symmetric_form_positions(r)
    np.testing.assert_allclose(xred[0], r)
    np.testing.assert_allclose(xred[2], [-r[0], 2 / 3 - r[1], 0.5 - r[2]])
    found, deviation = strain.symmetric_form_parameters(xred + np.array([1, 0, -1]))  # other periodic image
    np.testing.assert_allclose(found, r, atol=1e-14)
    assert deviation < 1e-14
    broken = xred.copy()
    broken[3, 1] += 1e-3
    assert strain.symmetric_form_parameters(broken)[1] > 5e-4
    assert torch.allclose(strain.symmetric_form_positions(torch.tensor(r)), torch.tensor(xred))
