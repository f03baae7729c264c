"""Stress by autograd through D(ε), uniaxial-stress relaxation and the instability detector."""

import numpy as np
import pytest
import torch

from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.strain import (cell_to_deformation, cell_volume, deformation_to_cell, deformation_to_strain,
                                             strain_to_deformation)

V0 = 5.89 * 10.201779256580686 * 9.56  # reference cell volume, Bohr³
# a stiffness in the Voigt tensor components (ε11, ε22, ε33, ε23, ε13, ε12), Ha per cell
STIFFNESS = np.array([
    [0.60, 0.20, 0.15, 0.00, 0.00, 0.02],
    [0.20, 0.60, 0.15, 0.00, 0.01, 0.00],
    [0.15, 0.15, 0.70, 0.03, 0.00, 0.00],
    [0.00, 0.00, 0.03, 0.50, 0.00, 0.00],
    [0.00, 0.01, 0.00, 0.00, 0.50, 0.00],
    [0.02, 0.00, 0.00, 0.00, 0.00, 0.45],
])


def voigt_of(deformation):
    e = deformation_to_strain(deformation)
    return torch.stack([e[..., 0, 0], e[..., 1, 1], e[..., 2, 2], e[..., 1, 2], e[..., 0, 2], e[..., 0, 1]], -1)


def quadratic_energy(deformation):
    """F(D) = ½ εᵀCε + a cubic term, ε = ε(D): an analytic energy with known derivatives."""
    v = voigt_of(deformation)
    c = torch.as_tensor(STIFFNESS, dtype=v.dtype)
    return 0.5 * torch.einsum('bi,ij,bj->b', v, c, v) - 0.3 * v[:, 1] ** 3


def random_strain(rng, scale=0.04):
    a = rng.normal(scale=scale, size=(3, 3))
    return 0.5 * (a + a.T)


def test_autograd_stress_matches_analytic_and_finite_differences():
    rng = np.random.default_rng(1)
    for _ in range(3):
        e = random_strain(rng)
        sigma = st.stress(quadratic_energy, e)
        v = np.array([e[0, 0], e[1, 1], e[2, 2], e[1, 2], e[0, 2], e[0, 1]])
        dfdv = STIFFNESS @ v
        dfdv[1] -= 0.9 * v[1] ** 2
        volume = float(st.strain_volume(torch.as_tensor(e)))
        analytic = np.zeros((3, 3))
        for k, (i, j) in enumerate(st.VOIGT_PAIRS):
            # F depends on the Voigt component ε_ij, which is both ε_ij and ε_ji of the tensor
            analytic[i, j] = analytic[j, i] = dfdv[k] / volume / (1.0 if i == j else 2.0)
        np.testing.assert_allclose(sigma, analytic, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(sigma, st.stress_finite_difference(quadratic_energy, e), rtol=1e-6, atol=1e-11)
        assert np.allclose(sigma, sigma.T)


def cauchy_finite_difference(energy, deformation, h=1e-6):
    """σ_ij = (1/V) ∂F/∂δε_ij with a_k -> (1 + δε) a_k applied on top of the deformed cell."""
    cell = deformation_to_cell(torch.as_tensor(deformation)[None])[0].numpy()
    volume = abs(np.linalg.det(cell))
    sigma = np.zeros((3, 3))
    for i, j in st.VOIGT_PAIRS:
        values = []
        for sign in (1.0, -1.0):
            delta = np.zeros((3, 3))  # off the diagonal: δε_ij = δε_ji = h/2, engineering shear γ_ij = h
            delta[i, j] = delta[j, i] = sign * h / (1.0 if i == j else 2.0)
            strained = cell @ (np.eye(3) + delta).T
            values.append(float(energy(cell_to_deformation(torch.as_tensor(strained)[None]))[0]))
        sigma[i, j] = sigma[j, i] = (values[0] - values[1]) / (2.0 * h) / volume  # σ_ij = (1/V) ∂F/∂γ_ij off the diagonal
    return sigma


def test_cauchy_stress_matches_strain_applied_to_the_deformed_cell():
    rng = np.random.default_rng(4)
    for deformation in pcamlp_deformations(3, rng):
        sigma = st.cauchy_stress(quadratic_energy, deformation[None])[0]
        np.testing.assert_allclose(sigma, cauchy_finite_difference(quadratic_energy, deformation), rtol=1e-6, atol=1e-12)
        assert np.allclose(sigma, sigma.T)


def test_cauchy_stress_of_a_pressure_term_is_hydrostatic_at_any_strain():
    """F = p V: σ = p 1 exactly, in any deformed cell (the volume grows by tr δε)."""
    p = 1e-4
    deformations = pcamlp_deformations(4, np.random.default_rng(5))
    sigma = st.cauchy_stress(lambda d: p * cell_volume(deformation_to_cell(d)), deformations)
    np.testing.assert_allclose(sigma, np.broadcast_to(p * np.eye(3), sigma.shape), atol=1e-15)


def test_free_energy_gradient_inverts_the_cauchy_stress():
    """∂F/∂D recovered from σ (what the labels give) equals autograd's ∂F/∂D of the energy behind σ."""
    deformations = pcamlp_deformations(5, np.random.default_rng(6))
    sigma = st.cauchy_stress(quadratic_energy, deformations)
    d = torch.as_tensor(deformations).clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(quadratic_energy(d).sum(), d)
    gradient = st.free_energy_gradient(deformations, sigma)
    np.testing.assert_allclose(gradient, expected.numpy(), rtol=1e-9, atol=1e-14)


def test_cauchy_stress_equals_the_small_distortion_form_at_the_reference():
    d0 = strain_to_deformation(torch.zeros(1, 3, 3, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(st.cauchy_stress(quadratic_energy, d0)[0] + 1.0, st.stress(quadratic_energy, np.zeros((3, 3))) + 1.0,
                               rtol=0, atol=1e-14)
    # and away from it, they differ at order ε σ
    e = np.diag([0.05, -0.04, 0.03])
    small = st.stress(quadratic_energy, e)
    exact = st.cauchy_stress(quadratic_energy, strain_to_deformation(torch.as_tensor(e)[None]).numpy())[0]
    assert 1e-3 < np.abs(exact - small).max() / np.abs(small).max() < 0.2


def pcamlp_deformations(n, rng):
    """D with λ in [0.92, 1.08] and θ in [85°, 95°]."""
    return np.concatenate([rng.uniform(0.92, 1.08, (n, 3)), rng.uniform(85.0, 95.0, (n, 3))], 1)


def test_stress_volume_is_that_of_the_strained_cell():
    e = np.diag([0.02, -0.01, 0.03])
    volume = float(st.strain_volume(torch.as_tensor(e)))
    assert volume == pytest.approx(V0 * 1.02 * 0.99 * 1.03, rel=1e-12)


def test_uniaxial_path_of_a_quadratic_matches_linear_elasticity():
    applied = np.linspace(0.0, -0.03, 4)
    for axis in range(3):
        path = st.uniaxial_path(lambda d: 0.5 * torch.einsum(
            'bi,ij,bj->b', voigt_of(d), torch.as_tensor(STIFFNESS, dtype=d.dtype), voigt_of(d)), axis, applied)
        free = [k for k in range(6) if k != axis]
        expected_free = -np.linalg.solve(STIFFNESS[np.ix_(free, free)], STIFFNESS[free, axis])
        np.testing.assert_allclose(path.strain[:, free], np.outer(applied, expected_free), atol=1e-8)
        assert path.converged.all()
        assert np.max(path.residual_stress) < 1e-9
        # the effective uniaxial modulus: σ_ii V = (C_ii - C_if C_ff⁻¹ C_fi) ε_ii to first order
        modulus = STIFFNESS[axis, axis] + STIFFNESS[axis, free] @ expected_free
        assert path.sigma[1] * V0 / applied[1] == pytest.approx(modulus, rel=0.05)
        assert path.transverse.shape == (4, 2)
        assert np.all(path.min_eigenvalue > 0)


def double_well_energy(deformation):
    """Elastic energy plus a tilted double well in the shear ε12 whose curvature a(ε22) = 0.02 + 0.5 ε22
    vanishes at ε22 = -0.04: the ε12 = 0 state is metastable above, unstable below (snap to the far well)."""
    v = voigt_of(deformation)
    diag = torch.as_tensor([0.6, 0.6, 0.7, 0.5, 0.5], dtype=v.dtype)
    elastic = 0.5 * (diag * v[:, :5] ** 2).sum(1)
    q = v[:, 5]
    a = 0.02 + 0.5 * v[:, 1]
    return elastic + 0.5 * a * q**2 - 2.0 * q**3 + 30.0 * q**4


def test_instability_detector_on_a_double_well():
    applied = np.linspace(0.0, -0.08, 17)  # steps of 0.005, the curvature crosses zero at -0.04
    path = st.uniaxial_path(double_well_energy, 1, applied)
    q = path.strain[:, 5]
    # the metastable branch holds q = 0 until the curvature vanishes, then q jumps to the far well
    assert np.all(np.abs(q[applied > -0.04]) < 1e-6)
    assert np.all(q[applied < -0.04] > 0.03)
    positions = 0.1 * q[:, None] * np.array([1.0, -2.0, 0.5])  # atoms that follow the shear
    found = st.detect_instability(path, positions)
    assert found.found
    assert -0.045 <= found.applied <= -0.035
    assert 'jump' in found.reason or 'soft' in found.reason
    # the same detector finds nothing on a stable path
    stable = st.uniaxial_path(double_well_energy, 1, np.linspace(0.0, -0.03, 7))
    assert not st.detect_instability(stable).found


def test_instability_detector_finds_a_stress_maximum():
    """F softens along ε11 only (σ11 = Cε - Dε³): no soft free-strain mode and no jump, but the uniaxial
    stress peaks at the spinodal ε11 = -sqrt(C / 3D) = -0.05 and the detector must say so."""
    c, spinodal = 0.6, -0.05
    d = c / (3 * spinodal**2)

    def softening_energy(deformation):
        v = voigt_of(deformation)
        stiff = torch.as_tensor(STIFFNESS, dtype=v.dtype)[1:, 1:]
        return 0.5 * c * v[:, 0] ** 2 - 0.25 * d * v[:, 0] ** 4 + 0.5 * torch.einsum('bi,ij,bj->b', v[:, 1:], stiff, v[:, 1:])

    applied = np.linspace(0.0, -0.08, 17)
    path = st.uniaxial_path(softening_energy, 0, applied)
    found = st.detect_instability(path)
    assert found.found and 'stress maximum' in found.reason
    assert -0.06 <= found.applied <= -0.04
    assert len(found.soft_indices) == 0 and len(found.jump_indices) == 0
    assert not st.detect_instability(st.uniaxial_path(softening_energy, 0, np.linspace(0.0, -0.03, 7))).found


@pytest.mark.slow
def test_stress_through_a_trained_committee_matches_finite_differences(one_torch_thread):
    from aiida_mlresponse.ml.pcamlp.fit import fit_pcamlp
    from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset
    from aiida_mlresponse.ml.pcamlp.training_loop import FitSettings

    data = synthetic_dataset(200, grid=(4, 4, 4))
    model, _ = fit_pcamlp(data['D'], {'F': data['F']}, None, {'n_members': 2},
                          settings=FitSettings(epochs=30, lbfgs_iterations=0, batch_size=64))
    model = model.double()
    rng = np.random.default_rng(3)
    for _ in range(2):
        e = random_strain(rng, 0.03)
        sigma = st.stress(model.free_energy, e)
        np.testing.assert_allclose(sigma, st.stress_finite_difference(model.free_energy, e, h=1e-5),
                                   rtol=1e-5, atol=1e-10)


def test_strains_from_the_zero_stress_cell_and_broyden_secant():
    offset = np.array([0.01, -0.02, 0.015, 0.0, 0.0, 0.0])
    stiffness = torch.as_tensor(np.diag([2.0, 2.5, 3.0, 1.0, 1.0, 1.0]) * 400, dtype=torch.float64)

    def energy(d):  # a quadratic whose zero-stress cell is at `offset`
        e = deformation_to_strain(d)
        v = torch.stack([e[:, 0, 0], e[:, 1, 1], e[:, 2, 2], e[:, 1, 2], e[:, 0, 2], e[:, 0, 1]], 1) - torch.as_tensor(offset)
        return 0.5 * torch.einsum('ni,ij,nj->n', v, stiffness, v)

    eq = st.equilibrium_strain(energy)
    np.testing.assert_allclose(eq, offset, atol=1e-7)
    path = st.uniaxial_path_from(energy, 0, [0.0, -0.01, -0.02], eq)
    assert abs(path.sigma[0]) < 1e-9 and np.all(np.diff(path.sigma) < 0)
    np.testing.assert_allclose(path.extra['relative_strain'][:, 0], [0.0, -0.01, -0.02], atol=1e-12)
    np.testing.assert_allclose(st.relative_strain(eq[:3], st.total_strain(eq[:3], [0.03, -0.01, 0.0])), [0.03, -0.01, 0.0])
    jac, step, change = np.eye(2), np.array([0.1, -0.2]), np.array([0.3, 0.05])
    np.testing.assert_allclose(st.broyden_update(jac, step, change) @ step, change)  # the secant condition


def test_strain_hessian_eigenvalue_matches_finite_differences_and_softens_towards_an_instability():
    # analytic energy: at ε the Hessian in the Voigt components is C - 1.8 ε22 e2e2ᵀ (the cubic term)
    rng = np.random.default_rng(3)
    strains = np.stack([random_strain(rng, 0.02) for _ in range(3)])
    deformations = strain_to_deformation(torch.as_tensor(strains)).numpy()
    values = st.strain_hessian_min_eigenvalue(quadratic_energy, deformations)
    h = 1e-4
    for value, deformation in zip(values, deformations):
        voigt = voigt_of(torch.as_tensor(deformation)[None])[0].numpy()
        hessian = np.zeros((6, 6))
        for i in range(6):
            for j in range(6):
                corners = []
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    v = voigt.copy()
                    v[i] += si * h
                    v[j] += sj * h
                    corners.append(float(st.energy_of_strain(quadratic_energy, torch.as_tensor(v)[None])[0]))
                hessian[i, j] = (corners[0] - corners[1] - corners[2] + corners[3]) / (4 * h * h)
        assert value == pytest.approx(np.linalg.eigvalsh(hessian)[0], rel=1e-5)
    # along ε22 the cubic term softens the ε22 mode: the lowest eigenvalue falls and turns negative
    path = np.zeros((4, 3, 3))
    path[:, 1, 1] = [0.0, 0.1, 0.25, 0.4]
    along = st.strain_hessian_min_eigenvalue(quadratic_energy, strain_to_deformation(torch.as_tensor(path)).numpy())
    assert np.all(np.diff(along) < 0) and along[-1] < 0 < along[0]
