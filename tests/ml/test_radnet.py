"""radnet CNN: shapes, atom-sum decomposition, normalization, presets, Taylor head and derivatives."""

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.common import standardization
from aiida_mlresponse.ml.radnet.network import LAYER_PRESETS, RadNet, complete_hyperparameters, count_flops_per_atom
from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline


def _random_cubes(batch, atoms, n=9, seed=0):
    return torch.rand((batch, atoms, 1, n, n, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('preset', sorted(LAYER_PRESETS))
def test_output_shapes_for_every_preset(preset):
    model = RadNet(preset=preset, n_outputs=6, cube_size=9 if preset != 'paper' else 5)
    cubes = _random_cubes(2, 3, n=model.hyperparameters['cube_size'])
    assert model.atom_contributions(cubes).shape == (2, 3, 6)
    assert model.normalized(cubes).shape == (2, 6)
    assert model(cubes).shape == (2, 6) and model(cubes).dtype == torch.float64


def test_paper_preset_is_the_authors_layer_list():
    hp = complete_hyperparameters(preset='paper')
    assert hp['layers'] == [[64, 1], [64, 1]] + [[16, 1]] * 4 + [[64, 2]] + [[32, 1]] * 4 and hp['dense'] == 1024
    # METHODS.md: about 1.3 GFLOP per atom for 15³ cubes (counted as 2 x multiply-adds here, no linear head).
    flops = count_flops_per_atom(dict(preset='paper', cube_size=15, linear_head=False))
    assert 1.0e9 < flops < 1.6e9
    assert count_flops_per_atom(dict(preset='tiny')) < flops / 1000


def test_prediction_is_a_sum_of_atom_contributions():
    model = RadNet(preset='tiny', n_outputs=3)
    cubes = _random_cubes(4, 5)
    per_atom = model.atom_contributions(cubes)
    torch.testing.assert_close(model.normalized(cubes), per_atom.sum(dim=1))
    # Permuting atoms changes nothing; a configuration's prediction ignores the other configurations.
    torch.testing.assert_close(model.normalized(cubes[:, torch.randperm(5)]), model.normalized(cubes))
    torch.testing.assert_close(model.normalized(cubes[1:2]), model.normalized(cubes)[1:2])
    # Doubling the cell (each atom twice) doubles the atom sum.
    torch.testing.assert_close(model.normalized(torch.cat([cubes, cubes], dim=1)), 2 * model.normalized(cubes))


def test_output_normalization_round_trip():
    targets = np.random.default_rng(0).normal([0.01, -2.0, 5.0], [1e-6, 0.3, 2.0], size=(50, 3))
    mean, std = standardization(targets)
    normalized = (targets - mean) / std
    np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(normalized.std(0), 1, atol=1e-12)
    model = RadNet(preset='tiny', n_outputs=3)
    model.output_offset.copy_(torch.as_tensor(mean))
    model.output_scale.copy_(torch.as_tensor(std))
    cubes = _random_cubes(3, 2)
    physical = model(cubes).detach().numpy()
    np.testing.assert_allclose((physical - mean) / std, model.normalized(cubes).detach().double().numpy(), atol=1e-9)
    # float64 keeps labels near 1e-2 that vary by 1e-6: the offset is added in float64.
    assert physical.dtype == np.float64 and np.ptp(physical[:, 0]) < 1e-4


def test_zero_output_starts_from_the_taylor_head():
    rng = np.random.default_rng(1)
    cell = 8.0 * np.eye(3)
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]) + 0.02 * rng.standard_normal((40, 2, 3))
    targets = np.c_[positions[:, 1, 0] - positions[:, 0, 0], (positions[:, 1, 1] - positions[:, 0, 1]) ** 2]
    baseline = TaylorBaseline(2, 1e-12).fit(positions, targets, cell)
    model = RadNet(preset='tiny', n_outputs=2, taylor={'degree': 2, 'n_atoms': 2}).zero_output_()
    model.taylor.set_from(baseline)
    cubes = _random_cubes(40, 2)
    prediction = model(cubes, torch.as_tensor(positions)).detach().numpy()
    np.testing.assert_allclose(prediction, baseline.predict(positions), atol=1e-12)
    with pytest.raises(ValueError, match='positions'):
        model(cubes)


def test_committee_position_function_autograd_matches_finite_differences():
    """Z*-style derivative of a member with a Taylor head, through the density, against central differences."""
    from aiida_mlresponse.ml.radnet.committee import Committee
    from aiida_mlresponse.ml.radnet.derivatives import jacobian
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    cell, positions, _ = gaas()
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    numbers = np.array([31, 33])
    rng = np.random.default_rng(2)
    samples = positions + 0.02 * rng.standard_normal((30, 2, 3))
    baseline = TaylorBaseline(2, 1e-12).fit(samples, rng.standard_normal((30, 3)), cell)
    torch.manual_seed(0)
    committee = Committee({'n_members': 2, 'member': {'preset': 'tiny', 'n_outputs': 3, 'dtype': 'float64',
                                                       'taylor': {'degree': 2, 'n_atoms': 2}}})
    for member in committee.members:
        member.taylor.set_from(baseline)
        member.set_input_standardization(torch.rand(10, 2, 1, 9, 9, 9, dtype=torch.float64) * 3)
    function = committee.position_function(cell, numbers, positions)
    x = samples[0]
    analytic = jacobian(function, x).numpy()  # (3, N, 3)
    h = 1e-5
    numeric = np.zeros_like(analytic)
    for atom in range(2):
        for beta in range(3):
            step = np.zeros_like(x)
            step[atom, beta] = h
            numeric[:, atom, beta] = (function(x + step) - function(x - step)).detach().numpy() / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    # Translation invariance: the derivatives sum to zero over atoms (acoustic sum rule by construction).
    np.testing.assert_allclose(analytic.sum(axis=1), 0.0, atol=1e-8 * np.abs(analytic).max())


def test_taylor_head_is_the_baseline_polynomial_values_and_gradients():
    """The head evaluates its buffers in torch; it must be the fitted TaylorBaseline, derivatives included."""
    from aiida_mlresponse.ml.radnet.heads import TaylorHead

    rng = np.random.default_rng(3)
    cell = 8.0 * np.eye(3)
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [4.0, 0.0, 4.0]]) + 0.05 * rng.standard_normal((50, 3, 3))
    baseline = TaylorBaseline(4, 1e-10).fit(positions, rng.standard_normal((50, 2)), cell)
    head = TaylorHead(4, 3, 2).set_from(baseline)
    x = torch.tensor(positions[:5], requires_grad=True)
    ours = head(x)
    expected = baseline.torch_predict(x)
    np.testing.assert_allclose(ours.detach().numpy(), expected.detach().numpy(), rtol=1e-13, atol=1e-14)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    np.testing.assert_allclose(ours_grad.numpy(), expected_grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('preset', ['tiny', 'light'])
def test_cube_jacobian_written_out_matches_autograd(preset):
    """RadNet.value_and_cube_jacobian (backpropagation written out, K rows at once) against autograd."""
    torch.manual_seed(0)
    model = RadNet(preset=preset, n_outputs=4, dtype='float64', polynomial={'components': 5})
    with torch.no_grad():
        model.input_mean.uniform_()
        model.input_scale.uniform_(0.5, 2.0)
        model.output_scale.uniform_(0.5, 2.0)
        model.residual_weight.uniform_()
        model.polynomial.projection.normal_()
        model.polynomial.coefficients.normal_()
    cubes = torch.rand(2, 1, 9, 9, 9, dtype=torch.float64) * 3
    leaf = cubes.clone().requires_grad_(True)
    value = model(leaf.unsqueeze(0))[0]
    expected = torch.stack([torch.autograd.grad(value, leaf, row, retain_graph=True)[0]
                            for row in torch.eye(4, dtype=value.dtype)])
    ours_value, ours = model.value_and_cube_jacobian(cubes)
    np.testing.assert_allclose(ours_value.numpy(), value.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12 * expected.abs().max().item())


def test_stacked_taylor_gradient_written_out_equals_autograd():
    """TaylorHead.stacked_with_gradient (forward mode through the monomials) against autograd, three heads."""
    from aiida_mlresponse.ml.radnet.heads import TaylorHead

    rng = np.random.default_rng(4)
    cell = 8.0 * np.eye(3) + 0.3 * rng.standard_normal((3, 3))
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [4.0, 0.0, 4.0]]) + 0.05 * rng.standard_normal((50, 3, 3))
    heads = [TaylorHead(5, 3, 2).set_from(TaylorBaseline(5, 1e-10).fit(positions[k:k + 40],
                                                                     rng.standard_normal((40, 2)), cell))
             for k in range(3)]
    x = torch.tensor(positions[45] + np.array([8.0, 0.0, 0.0]), requires_grad=True)  # an image: minimum image
    values = TaylorHead.stacked(heads, x.unsqueeze(0))[:, 0]  # (3, 2)
    cotangents = torch.eye(6, dtype=torch.float64).reshape(6, 3, 2)
    (expected,) = torch.autograd.grad(values, x, cotangents, is_grads_batched=True)
    ours_values, ours = TaylorHead.stacked_with_gradient(heads, x.detach())
    np.testing.assert_allclose(ours_values.numpy(), values.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(ours.numpy(), expected.reshape(3, 2, 3, 3).numpy(), rtol=1e-12,
                               atol=1e-13 * expected.abs().max().item())


@pytest.mark.parametrize('preset', ['tiny', 'light'])
def test_network_forward_mode_written_out_matches_autograd(preset):
    """AtomNetwork.value_and_jvp (primal and tangents in one batch) against torch.func.jvp."""
    from torch.func import jvp

    torch.manual_seed(1)
    model = RadNet(preset=preset, n_outputs=4, dtype='float64')
    cubes = torch.rand(2, 1, 9, 9, 9, dtype=torch.float64) * 3
    tangents = torch.randn(5, 2, 1, 9, 9, 9, dtype=torch.float64)
    value, derivatives = model.atom_network.value_and_jvp(cubes, tangents)
    np.testing.assert_allclose(value.numpy(), model.atom_network(cubes).detach().numpy(), rtol=1e-12)
    for t in range(5):
        _, expected = jvp(model.atom_network, (cubes,), (tangents[t],))
        np.testing.assert_allclose(derivatives[t].numpy(), expected.detach().numpy(), rtol=1e-10,
                                   atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize('preset', ['tiny', 'light'])
def test_stacked_members_forward_mode_equals_each_member(preset):
    """radnet.stacked_correction_and_jvp (members stacked) gives each member's weighted_correction_and_jvp."""
    from aiida_mlresponse.ml.radnet.network import stacked_correction_and_jvp

    torch.manual_seed(2)
    members = [RadNet(preset=preset, n_outputs=3, dtype='float64') for _ in range(3)]
    for member in members:
        with torch.no_grad():
            member.input_mean.uniform_()
            member.input_scale.uniform_(0.5, 2.0)
            member.output_scale.uniform_(0.5, 2.0)
            member.output_offset.normal_()
            member.residual_weight.uniform_()
    cubes = torch.rand(2, 1, 9, 9, 9, dtype=torch.float64) * 3
    tangents = torch.randn(3, 2, 1, 9, 9, 9, dtype=torch.float64)
    values, derivatives = stacked_correction_and_jvp(members, cubes, tangents)
    for k, member in enumerate(members):
        value, derivative = member.weighted_correction_and_jvp(cubes, tangents)
        np.testing.assert_allclose(values[k].numpy(), value.numpy(), rtol=1e-12)
        np.testing.assert_allclose(derivatives[k].numpy(), derivative.numpy(), rtol=1e-10,
                                   atol=1e-12 * derivative.abs().max().item())
