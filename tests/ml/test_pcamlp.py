"""PCA-MLP committee: reduction, standardization, committee outputs, training, checkpoint, linear baseline."""

import copy

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml import checkpoint
from aiida_mlresponse.ml.common import standardization
from aiida_mlresponse.ml.pcamlp import training_loop
from aiida_mlresponse.ml.pcamlp.fit import FitSettings, fit_pcamlp, stress_slopes
from aiida_mlresponse.ml.pcamlp.linear import LinearBaseline
from aiida_mlresponse.ml.pcamlp.metrics import nrmse, position_error
from aiida_mlresponse.ml.pcamlp.model import DEFAULT_FIELDS, PCAMLPCommittee, default_hyperparameters, save
from aiida_mlresponse.ml.pcamlp.network import StackedMLP
from aiida_mlresponse.ml.pcamlp.pca import fit_field_pca, pca_project, pca_reconstruct
from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset, synthetic_deformations, synthetic_free_energy


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def data():
    return synthetic_dataset(120, grid=(4, 6, 6), seed=7)


def test_pca_round_trip(data):
    fields = data['rho'].reshape(120, -1).astype(np.float64)
    # a basis with as many components as samples reproduces every training field exactly
    mean, components, ratio = fit_field_pca(fields, 120)
    np.testing.assert_allclose(components @ components.T, np.eye(len(components)), atol=1e-10)
    back = pca_reconstruct(pca_project(fields, mean, components), mean, components)
    np.testing.assert_allclose(back, fields, rtol=0, atol=1e-9 * np.abs(fields).max())
    # a truncated basis: projection is idempotent, and the error shrinks as d grows
    errors = []
    for d in (2, 5, 20):
        mean, components, _ = fit_field_pca(fields, d)
        once = pca_reconstruct(pca_project(fields, mean, components), mean, components)
        twice = pca_reconstruct(pca_project(once, mean, components), mean, components)
        np.testing.assert_allclose(twice, once, atol=1e-10 * np.abs(fields).max())
        errors.append(nrmse(once, fields).mean())
    assert errors[0] > errors[1] > errors[2]
    # a fraction of explained variance picks d
    _, components, ratio = fit_field_pca(fields, 0.999)
    assert ratio.sum() >= 0.999 and ratio[:-1].sum() < 0.999


def test_nrmse_is_rmse_over_range():
    true = np.array([[0.0, 1.0, 2.0, 3.0]])
    pred = true + np.array([[0.3, -0.3, 0.3, -0.3]])
    assert nrmse(pred, true)[0] == pytest.approx(0.1)


def test_standardization_round_trip():
    rng = np.random.default_rng(0)
    values = rng.normal(loc=[3.0, -1.0, 0.0], scale=[1e-3, 5.0, 0.0], size=(50, 3))
    mean, std = standardization(values)
    z = (values - mean) / std
    np.testing.assert_allclose(z[:, :2].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].std(0), 1.0, atol=1e-12)
    assert std[2] == 1.0  # a constant column is left unscaled, not divided by zero
    np.testing.assert_allclose(z * std + mean, values, rtol=1e-14)


def test_committee_standardizes_inputs_and_outputs(data):
    """A committee without quadratic parts whose nets output exactly zero predicts the training mean of every output."""
    model, _ = fit_pcamlp(data['D'], {'F': data['F'], 'R': data['R']}, {'rho': data['rho']}, {'n_members': 3, 'pca_components': 5, 'quadratic': False},
        settings=FitSettings(epochs=1, lbfgs_iterations=0, field_epochs=1, field_lbfgs_iterations=0))
    np.testing.assert_allclose(model.input_mean.numpy(), data['D'].mean(0))
    np.testing.assert_allclose(model.input_std.numpy(), data['D'].std(0))
    with torch.no_grad():
        for net in (model.scalar_net, model.field_net):
            net.weights[-1].zero_()
            net.biases[-1].zero_()
    p = model.predict(data['D'][:4])
    np.testing.assert_allclose(p['F'][:, 0], data['F'].mean(), rtol=1e-6)
    np.testing.assert_allclose(p['R'], np.broadcast_to(data['R'].mean(0), (4, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p['rho'], np.broadcast_to(data['rho'].mean(0), (4, 4, 6, 6)), rtol=1e-5)
    assert np.all(p['F_std'] == 0) and np.all(p['rho_std'] == 0)


def test_committee_spread_of_fields_equals_spread_of_reconstructions(data):
    model, _ = fit_pcamlp(data['D'], {'F': data['F']}, {'u': data['u']}, {'n_members': 4, 'pca_components': 6},
        settings=FitSettings(epochs=2, lbfgs_iterations=0, field_epochs=2, field_lbfgs_iterations=0))
    p = model.predict(data['D'][:5], coefficients=True)
    with torch.no_grad():
        members = model.reconstruct('u', model.coefficient_members('u', data['D'][:5])).numpy()
        f_members = model.head_members('F', data['D'][:5]).numpy()
    np.testing.assert_allclose(p['u'], members.mean(0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(p['u_std'], members.std(0), rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(p['F_std'], f_members.std(0), rtol=1e-4)
    assert p['F_std'].min() > 0  # independently initialised members disagree
    assert p['u_coef'].shape == (5, 6) and p['u'].shape == (5, 4, 6, 6)


@pytest.mark.slow
def test_tiny_training_reduces_the_loss_and_round_trips_through_a_checkpoint(data, tmp_path):
    train, test = slice(0, 100), slice(100, 120)
    scalars = {name: data[name][train] for name in ('F', 'U', 'minus_TS', 'R')}
    fields = {name: data[name][train] for name in DEFAULT_FIELDS}
    model, history = fit_pcamlp(data['D'][train], scalars, fields, {'n_members': 2, 'pca_components': 6, 'field_hidden': [32, 32]},
        settings=FitSettings(epochs=40, lbfgs_iterations=300, field_epochs=20, field_lbfgs_iterations=50, batch_size=32, eval_every=5))
    for stage in ('scalars', 'fields'):
        curve = history[stage]
        assert curve['epoch'][0] == 0  # validation loss of the untrained members
        assert curve['final_val_loss'] < curve['val_loss'][0]  # Adam then L-BFGS, best kept
    p = model.predict(data['D'][test])
    f_mae = np.abs(p['F'][:, 0] - data['F'][test]).mean()
    # the seed's linear baseline on the same data: the committee must beat it (F is quadratic + cubic
    # in the strain), and the members' MLPs must add to the quadratic part they correct
    linear = LinearBaseline().fit(data['D'][train], {'F': data['F'][train]}).predict(data['D'][test])
    assert f_mae < 0.7 * np.abs(linear['F'][:, 0] - data['F'][test]).mean()
    quadratic_only = copy.deepcopy(model)
    with torch.no_grad():
        for net in (quadratic_only.scalar_net, quadratic_only.field_net):
            net.weights[-1].zero_()
            net.biases[-1].zero_()
    q = quadratic_only.predict(data['D'][test])
    assert f_mae < 0.8 * np.abs(q['F'][:, 0] - data['F'][test]).mean()
    assert nrmse(p['rho'], data['rho'][test]).mean() < nrmse(q['rho'], data['rho'][test]).mean()
    assert nrmse(p['rho'], data['rho'][test]).mean() < 0.05
    path = save(tmp_path / 'model.pt', model, metadata={'targets': list(scalars)}, history=history)
    loaded, payload = checkpoint.load(path)
    assert payload['kind'] == 'pcamlp' and 'scalars' in payload['curves']
    again = loaded.predict(data['D'][test])
    for key in ('F', 'F_std', 'R', 'rho', 's_std'):
        np.testing.assert_array_equal(again[key], p[key])


def test_linear_baseline_is_exact_for_affine_data():
    rng = np.random.default_rng(2)
    d = synthetic_deformations(40, seed=1)
    a = rng.normal(size=(6, 2))
    scalars = {'F': d @ a[:, 0] + 1.0, 'R': d @ a}
    basis = rng.normal(size=(6, 30))
    fields = {'rho': (d @ basis + 2.0).reshape(40, 2, 3, 5)}
    model = LinearBaseline().fit(d[:30], {k: v[:30] for k, v in scalars.items()},
                                 {'rho': fields['rho'][:30]}, pca_components=10)
    p = model.predict(d[30:])
    np.testing.assert_allclose(p['F'][:, 0], scalars['F'][30:], rtol=1e-9)
    np.testing.assert_allclose(p['R'], scalars['R'][30:], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(p['rho'], fields['rho'][30:], rtol=1e-8)


def test_position_error_uses_the_deformed_cell():
    cells = np.array([np.diag([2.0, 3.0, 4.0])])
    assert position_error([[0.01, 0.0, 0.0]], [[0.0, 0.0, 0.0]], cells)[0] == pytest.approx(0.02)
    assert position_error([[0.0, 0.01, 0.01]], [[0.0, 0.0, 0.0]], cells)[0] == pytest.approx(0.05)


@pytest.mark.parametrize('shape', [(60, 200), (80, 12)])
def test_pca_matches_scikit_learn(shape):
    """The Gram-matrix PCA gives scikit-learn's explained variance and principal subspaces (N < or > points)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    n, p = shape
    x = (rng.normal(size=(n, 8)) * np.linspace(3, 0.1, 8)) @ rng.normal(size=(8, p))  # 8 decaying directions
    x += 1e-3 * rng.normal(size=(n, p)) + 5.0
    mean, components, ratio = fit_field_pca(x, 5)
    reference = PCA(n_components=5, svd_solver='full').fit(x)
    np.testing.assert_allclose(mean, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-9)
    # the same directions up to sign: |<v_i, w_i>| = 1
    np.testing.assert_allclose(np.abs(np.sum(components * reference.components_, axis=1)), 1.0, atol=1e-9)
    d = fit_field_pca(x, 0.99)[1].shape[0]
    assert d == PCA(n_components=0.99, svd_solver='full').fit(x).n_components_


def _committee(k=3, heads=None, dims=None, grid=(2, 3, 4), hidden=(7, 5), seed=0):
    heads = heads or {'F': 1, 'U': 1, 'R': 3}
    dims = dims or {'rho': 4, 'u': 6}
    hyper = default_hyperparameters(n_members=k, heads=heads, fields=list(dims), pca_dims=dims,
                                       field_shape=list(grid), field_hidden=list(hidden), scalar_hidden=[6, 8, 5])
    model = PCAMLPCommittee(hyper, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # every buffer random, so a wrong index or a missed scaling shows
        for name, buffer in model.named_buffers():
            buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        model.input_mean.copy_(torch.tensor([1.0, 1.0, 1.0, 90.0, 90.0, 90.0]))
    return model.eval()


def _plain_mlp(x, weights, biases):
    """One member, layer by layer, with no stacking."""
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b[0]
        if i < len(weights) - 1:
            h = torch.tanh(h)
    return h


def _members_by_hand(net, output: int, k: int, x, width: int):
    """The k members of output `output` of a fused StackedMLP, each evaluated on its own (K, B, width)."""
    return torch.stack([_plain_mlp(x, [w[output * k + j] for w in net.weights], [b[output * k + j] for b in net.biases])[:, :width]
                        for j in range(k)])


def _quadratic_by_hand(x):
    """1, x_i, x_i x_j (i <= j), column by column."""
    columns = [torch.ones(len(x))] + [x[:, i] for i in range(6)]
    columns += [x[:, i] * x[:, j] for i in range(6) for j in range(i, 6)]
    return torch.stack(columns, 1)


def test_fused_evaluation_equals_member_by_member_evaluation():
    k = 3
    model = _committee(k)
    d = torch.as_tensor(synthetic_deformations(11, seed=4), dtype=torch.float32)
    x = (d - model.input_mean) / model.input_std
    p = model.predict(d, coefficients=True)
    chunked = model.predict(d, coefficients=True, chunk_size=4)
    for key in p:  # float32: the chunks sum in another order
        np.testing.assert_allclose(chunked[key], p[key], rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        for i, (name, n_out) in enumerate(zip(model.head_names, model.head_sizes)):
            members = _members_by_hand(model.scalar_net, i, k, x, n_out) * model.scalar_std[i, :n_out] \
                + model.scalar_mean[i, :n_out] + _quadratic_by_hand(x) @ model.scalar_quadratic[i, :, :n_out]
            np.testing.assert_allclose(model.head_members(name, d).numpy(), members.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(p[name], members.mean(0).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(p[f'{name}_std'], members.std(0, unbiased=False).numpy(), rtol=1e-4, atol=1e-6)
        for i, (name, dim) in enumerate(zip(model.field_names, model.field_dims)):
            members = _members_by_hand(model.field_net, i, k, x, dim) * model.coef_std[i, :dim] + model.coef_mean[i, :dim] \
                + _quadratic_by_hand(x) @ model.field_quadratic[i, :, :dim]
            np.testing.assert_allclose(model.coefficient_members(name, d).numpy(), members.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(p[f'{name}_coef'], members.mean(0).numpy(), rtol=1e-5, atol=1e-6)
            fields = model.reconstruct(name, members)
            np.testing.assert_allclose(p[name], fields.mean(0).numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(p[f'{name}_std'], fields.std(0, unbiased=False).numpy(), rtol=1e-3, atol=1e-5)
    assert p['u_coef'].shape == (11, 6) and p['rho_coef'].shape == (11, 4) and p['R'].shape == (11, 3)


def test_padded_outputs_stay_zero_through_training(data):
    """Heads of 1 and 3 outputs and fields of different d share one stacked net: padding gets no signal."""
    model, _ = fit_pcamlp(data['D'], {'F': data['F'], 'R': data['R']}, {'rho': data['rho'], 'u': data['u']}, {'n_members': 2, 'pca_components': 0.999, 'field_hidden': [8, 8]},
        settings=FitSettings(epochs=3, lbfgs_iterations=10, field_epochs=3, field_lbfgs_iterations=10))
    assert model.field_dims[0] != model.field_dims[1]
    for net, group in ((model.scalar_net, 'scalars'), (model.field_net, 'fields')):
        padded = (1 - model.output_mask(group)).repeat_interleave(2, 0).bool()
        assert padded.any()
        assert torch.all(net.weights[-1].detach().transpose(1, 2)[padded] == 0)


def test_output_layer_refit_is_the_ridge_minimizer(data):
    """After the refit the gradient of every member's loss with respect to its output layer vanishes."""
    x = torch.as_tensor((data['D'] - data['D'].mean(0)) / data['D'].std(0), dtype=torch.float32)
    y = torch.as_tensor(np.stack([data['F'], data['U']]) - np.stack([data['F'], data['U']]).mean(1, keepdims=True),
                        dtype=torch.float32)[..., None] * 100
    net = StackedMLP(4, [6, 9, 7, 1], torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    index = torch.as_tensor(np.stack([rng.integers(0, 120, 120) for _ in range(2)]), dtype=torch.long).repeat(2, 1)
    y_members = y.repeat_interleave(2, 0)
    mask = torch.ones(4, 1, 1)
    l2 = 1e-3

    def loss():
        err = (net(x[index]) - y_members[torch.arange(4)[:, None], index]) ** 2
        return (err.mean(dim=(1, 2)) + l2 * net.l2()).sum()

    before = loss().item()
    training_loop._refit_output_layer(net, x, y_members, mask, index, l2)
    after = loss()
    after.backward()
    assert after.item() < before
    scale = np.abs(net.weights[-1].detach().numpy()).max() * l2
    assert np.abs(net.weights[-1].grad.numpy()).max() < 1e-3 * scale + 1e-6
    assert np.abs(net.biases[-1].grad.numpy()).max() < 1e-5


def test_hidden_jacobian_matches_autograd():
    net = StackedMLP(3, [6, 9, 7, 1], torch.Generator().manual_seed(3))
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(4))
    members = slice(1, 3)
    hidden, jacobian = net.hidden_and_jacobian(x, members)
    np.testing.assert_allclose(hidden.detach(), net.subset(members).hidden(x).detach(), rtol=1e-6, atol=1e-7)
    for k in range(2):
        for b in range(5):
            reference = torch.autograd.functional.jacobian(lambda v: net.subset(members).hidden(v[None, None].expand(2, 1, 6))[k, 0], x[k, b])
            np.testing.assert_allclose(jacobian[k, b].detach(), reference, rtol=1e-5, atol=1e-6)


def test_stress_slopes_map_the_energy_gradient_to_abinit_stress(data):
    """σ = Σ_j ∂y/∂x_j J_j (scaled) holds for the exact synthetic F: the slope targets are consistent."""
    model, _ = fit_pcamlp(data['D'], {'F': data['F']}, None, {'n_members': 1},
        settings=FitSettings(epochs=0, lbfgs_iterations=0))
    slopes = stress_slopes(model, data['D'], data['stress'], 1.0)
    d = torch.as_tensor(data['D']).requires_grad_(True)
    (dfdd,) = torch.autograd.grad(synthetic_free_energy(d).sum(), d)
    dydx = dfdd * model.input_std.double() / model.scalar_std[0, 0].double()  # standardized gradient
    predicted = slopes.predict(dydx[None].float(), torch.arange(len(d))[None])[0]
    np.testing.assert_allclose(predicted, slopes.targets, rtol=1e-4, atol=1e-5)


def test_output_layer_refit_with_stress_rows_is_the_minimizer(data):
    """With slopes the refit still zeroes the gradient of the whole loss (values + stress) in the output layer."""
    model, _ = fit_pcamlp(data['D'], {'F': data['F']}, None, {'n_members': 2},
        settings=FitSettings(epochs=0, lbfgs_iterations=0))
    slopes = stress_slopes(model, data['D'], data['stress'], 0.7)
    x = model._inputs(data['D']).float()
    y = torch.as_tensor((data['F'] - data['F'].mean()) / data['F'].std(), dtype=torch.float32)[None, :, None].repeat(2, 1, 1)
    net = StackedMLP(2, [6, 9, 7, 1], torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    index = torch.as_tensor(np.stack([rng.integers(0, 120, 120) for _ in range(2)]), dtype=torch.long)
    l2 = 1e-3

    def loss():
        err = (net(x[index]) - y[torch.arange(2)[:, None], index]) ** 2
        return (err.mean(dim=(1, 2)) + l2 * net.l2() + slopes.loss(net, slice(0, 2), x, index)).sum()

    before = loss().item()
    training_loop._refit_output_layer(net, x, y, torch.ones(2, 1, 1), index, l2, slopes=slopes, k=2)
    after = loss()
    after.backward()
    assert after.item() < before
    assert np.abs(net.weights[-1].grad.numpy()).max() < 1e-4 * np.abs(net.weights[-1].detach().numpy()).max()
    assert np.abs(net.biases[-1].grad.numpy()).max() < 1e-5


@pytest.mark.slow
def test_training_on_stress_gives_consistent_energy_and_stress(data):
    """The F head trained with ABINIT-like stress: stress error far below the values-only fit, F no worse."""
    from aiida_mlresponse.physics.stress import cauchy_stress

    train, test = slice(0, 60), slice(60, 120)
    errors = {}
    for weight in (0.0, 1.0):
        model, history = fit_pcamlp(data['D'][train], {'F': data['F'][train]}, None, {'n_members': 2}, stress=data['stress'][train],
        settings=FitSettings(stress_weight=weight, epochs=30, lbfgs_iterations=200, batch_size=32, eval_every=5))
        model = model.double()
        f_mae = np.abs(model.predict(data['D'][test], fields=False)['F'][:, 0] - data['F'][test]).mean()
        sigma = cauchy_stress(model.free_energy, data['D'][test])
        errors[weight] = (f_mae, np.abs(sigma - data['stress'][test]).mean())
    assert history["stress_weight"] == 1.0
    assert errors[1.0][1] < 0.5 * errors[0.0][1]
    assert errors[1.0][0] < errors[0.0][0]


def test_quadratic_part_is_exact_for_a_quadratic_energy_and_its_stress(data):
    """F quadratic in the standardized D with its exact Cauchy stress: the quadratic part alone fits both,
    so the MLPs are left a zero residual (values and stress)."""
    from aiida_mlresponse.physics.stress import cauchy_stress

    mean, std = data['D'].mean(0), data['D'].std(0)
    rng = np.random.default_rng(3)
    b = rng.normal(size=(6, 6)) * 1e-3
    a = rng.normal(size=6) * 1e-3

    def energy(d):
        x = (d - torch.as_tensor(mean)) / torch.as_tensor(std)
        return -4.0 + x @ torch.as_tensor(a) + torch.einsum('bi,ij,bj->b', x, torch.as_tensor(b @ b.T), x)

    f = energy(torch.as_tensor(data['D'])).numpy()
    stress = cauchy_stress(energy, data['D'])
    model, _ = fit_pcamlp(data['D'], {'F': f}, None, {'n_members': 2}, stress=stress,
        settings=FitSettings(stress_weight=1.0, epochs=0, lbfgs_iterations=0, refit_output=False))
    with torch.no_grad():
        model.scalar_net.weights[-1].zero_()
        model.scalar_net.biases[-1].zero_()
    model = model.double()
    p = model.predict(data['D'], fields=False)
    # to the float32 precision of the stored weights
    np.testing.assert_allclose(p['F'][:, 0], f, rtol=0, atol=1e-6 * np.ptp(f))
    np.testing.assert_allclose(cauchy_stress(model.free_energy, data['D']), stress, rtol=0, atol=1e-5 * np.abs(stress).max())


def test_training_entry_point_on_a_dataset_file(tmp_path):
    """The command a TrainingCalculation runs: a schema-checked 'mg_strain' file in, a pcamlp model file out,
    with the dataset columns under the model's names (F from free_energy, ...) and their schema units."""
    import json

    from aiida_mlresponse.data.schema import write_npz
    from aiida_mlresponse.ml import train_entry
    from aiida_mlresponse.ml.pcamlp.data import read_dataset
    from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_mg_strain

    columns = synthetic_mg_strain(40, grid=(3, 4, 4), seed=5)
    write_npz(tmp_path / 'dataset.npz', 'mg_strain', columns, {'source': 'synthetic'})
    named = read_dataset(tmp_path / 'dataset.npz')
    np.testing.assert_array_equal(named['F'], columns['free_energy'])
    np.testing.assert_array_equal(named['minus_TS'], columns['entropy_energy'])
    (tmp_path / 'config.json').write_text(json.dumps({'kind': 'pcamlp', 'hyperparameters': {
        'hyperparameters': {'n_members': 2, 'pca_components': 3, 'field_hidden': [8, 8]},
        'epochs': 2, 'lbfgs_iterations': 0, 'field_epochs': 1, 'field_lbfgs_iterations': 0}}))
    paths = [str(tmp_path / name) for name in ('config.json', 'dataset.npz', 'model.pt')]
    assert train_entry.main(paths) == 0
    model, payload = checkpoint.load(tmp_path / 'model.pt')
    assert payload['kind'] == 'pcamlp' and payload['metadata']['n_train'] == 40
    assert payload['metadata']['units']['minus_TS'] == 'Ha (-TS)' and payload['metadata']['units']['rho'] == 'e/Bohr^3'
    assert model.predict(columns['deformation'][:2])['rho'].shape == (2, 3, 4, 4)
    (tmp_path / 'config.json').write_text(json.dumps({'kind': 'pcamlp', 'hyperparameters': {'epoch': 2}}))
    with pytest.raises(ValueError, match=r"unknown pcamlp fit settings \['epoch'\]"):
        train_entry.main(paths)
