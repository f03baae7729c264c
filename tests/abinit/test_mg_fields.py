"""Field helpers of the Mg parser: symmetrization in G space, grid layout, cold-smearing entropy."""

import numpy as np
import pytest
from scipy.integrate import quad

from aiida_mlresponse.abinit import mg_fields


def test_symmetrize_identity_keeps_the_field():
    field = np.random.default_rng(0).normal(size=(6, 8, 10))
    out = mg_fields.symmetrize(field, [np.eye(3, dtype=int)], [np.zeros(3)])
    np.testing.assert_allclose(out, field, atol=1e-12)


def test_symmetrize_with_inversion_and_fractional_translation():
    """With inversion about ¼ along x (translation ½ on a grid of 6), f(x) must equal f(-x + ½)."""
    rng = np.random.default_rng(1)
    field = rng.normal(size=(6, 4, 4))
    rotations = [np.eye(3, dtype=int), -np.eye(3, dtype=int)]
    translations = [np.zeros(3), np.array([0.5, 0.0, 0.0])]
    out = mg_fields.symmetrize(field, rotations, translations)
    i, j, k = np.meshgrid(range(6), range(4), range(4), indexing='ij')
    image = out[(-i + 3) % 6, (-j) % 4, (-k) % 4]
    np.testing.assert_allclose(out, image, atol=1e-12)
    np.testing.assert_allclose(out.sum(), field.sum())  # the average (∫) is kept
    # a translation that is not on the grid (⅓ of 4 points) still gives a field with the same mean
    off = mg_fields.symmetrize(field, rotations, [np.zeros(3), np.array([0.0, 1 / 3, 0.0])])
    np.testing.assert_allclose(off.mean(), field.mean())


def test_grid_field_layout():
    """ABINIT writes (component, n3, n2, n1, re); we store field[i1, i2, i3]."""
    raw = np.arange(2 * 3 * 4).reshape(1, 4, 3, 2, 1)  # n1=2, n2=3, n3=4
    field = mg_fields.grid_field(raw)
    assert field.shape == (2, 3, 4)
    assert field[1, 2, 3] == raw[0, 3, 2, 1, 0]


def test_cold_smearing_entropy_weight():
    """The weight is minus ABINIT's occopt-4 entropy function: a few values and its integral."""
    assert mg_fields.cold_smearing_entropy_weight(0.0) == pytest.approx(-0.5 / np.sqrt(np.pi))
    assert abs(mg_fields.cold_smearing_entropy_weight(8.0)) < 1e-25
    # ∫ e^{-t²}(κt³ + t² - ½) dt = 0 + √π/2 - √π/2: a band far from E_F adds nothing, the total is 0
    total, _ = quad(mg_fields.cold_smearing_entropy_weight, -12, 12)
    assert total == pytest.approx(0.0, abs=1e-12)
    # the κ term makes it asymmetric in t (cold smearing), which fixes the sign convention of t
    assert mg_fields.cold_smearing_entropy_weight(1.0) != pytest.approx(mg_fields.cold_smearing_entropy_weight(-1.0))


def test_symmetrize_refuses_an_operation_the_grid_does_not_have():
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(mg_fields.FieldError, match='onto another grid'):
        mg_fields.symmetrize(np.zeros((4, 6, 6)), [swap], [np.zeros(3)])
    out = mg_fields.symmetrize(np.arange(36.0).reshape(6, 6, 1).repeat(2, axis=2), [np.eye(3, dtype=int), swap], [np.zeros(3)] * 2)
    np.testing.assert_allclose(out, np.swapaxes(out, 0, 1), atol=1e-12)
