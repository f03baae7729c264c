"""Committee: mean and spread of the members, bootstrap resampling, members differ."""

import json

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.radnet.committee import Committee
from aiida_mlresponse.ml.radnet.fit import resample, train_committee
from aiida_mlresponse.ml.radnet.training_loop import TrainingConfig


def test_bootstrap_and_split_resampling():
    sample, out_of_bag = resample(200, seed=3)
    assert len(sample) == 200 and len(np.unique(sample)) < 200  # with replacement
    assert set(out_of_bag).isdisjoint(sample) and set(out_of_bag) | set(sample) == set(range(200))
    assert 0.25 < len(out_of_bag) / 200 < 0.5  # ~ e^-1 out of bag
    other, _ = resample(200, seed=4)
    assert not np.array_equal(np.sort(sample), np.sort(other))
    train, validation = resample(100, seed=0, resampling='split', holdout=0.2)
    assert len(validation) == 20 and set(train).isdisjoint(validation) and len(set(train)) == 80
    with pytest.raises(ValueError):
        resample(10, 0, resampling='jackknife')


def test_committee_mean_and_spread_are_those_of_the_members():
    torch.manual_seed(0)
    committee = Committee({'n_members': 3, 'member': {'preset': 'tiny', 'n_outputs': 6}})
    cubes = torch.rand(5, 2, 1, 9, 9, 9)
    with torch.no_grad():
        each = np.stack([member(cubes).numpy() for member in committee.members])
        mean, spread = committee.predict(cubes)
    assert committee(cubes).shape == (3, 5, 6)
    np.testing.assert_allclose(mean.numpy(), each.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(spread.numpy(), each.std(axis=0, ddof=1), rtol=1e-10)
    assert (spread.numpy() > 0).all()


def test_committee_checks_its_hyperparameters():
    with pytest.raises(ValueError, match='cube size'):
        Committee({'n_members': 2, 'member': {'preset': 'tiny', 'cube_size': 7}})
    with pytest.raises(ValueError, match='unknown radnet hyperparameters'):
        Committee({'n_members': 2, 'member': {'preset': 'tiny', 'channels': 3}})


@pytest.mark.slow
def test_trained_members_differ_and_spread_grows_off_the_data():
    """Members trained on different bootstrap samples agree on the data and disagree far from it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cubes = torch.rand(40, 2, 1, 9, 9, 9, generator=torch.Generator().manual_seed(1)) * 0.2
    targets = cubes.sum(dim=(1, 2, 3, 4, 5)).numpy()[:, None] * np.array([[1.0, -2.0, 0.5]])
    positions = rng.standard_normal((40, 2, 3))
    committee, results = train_committee(
        cubes, positions, targets, 10 * np.eye(3), n_members=3,
        member_hyperparameters={'preset': 'tiny', 'n_outputs': 3},
        config=TrainingConfig(epochs=8, batch_size=8, learning_rate=3e-3), log=None)
    assert len(results) == 3
    first = [p.detach().clone() for p in committee.members[0].parameters()]
    second = list(committee.members[1].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    with torch.no_grad():
        _, spread_on = committee.predict(cubes)
        _, spread_off = committee.predict(cubes + 5.0)
    assert spread_off.mean() > spread_on.mean()


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def test_fit_hyperparameters_are_completed_and_checked():
    from aiida_mlresponse.ml.radnet.fit import DEFAULT_FIT_HYPERPARAMETERS, complete_fit_hyperparameters

    hp = complete_fit_hyperparameters({'n_members': 2, 'training': {'epochs': 7}, 'member': {'preset': 'light'}})
    assert hp['n_members'] == 2 and hp['training']['epochs'] == 7 and hp['member']['preset'] == 'light'
    # Nested dicts are merged key by key: the other defaults stay.
    assert hp['training']['batch_size'] == DEFAULT_FIT_HYPERPARAMETERS['training']['batch_size']
    assert hp['member']['cube_size'] == DEFAULT_FIT_HYPERPARAMETERS['member']['cube_size']
    assert complete_fit_hyperparameters({'head': None})['head'] is None
    json.dumps(hp)  # stored in checkpoints
    for bad, message in (({'members': 3}, 'unknown committee hyperparameter'),
                         ({'training': {'epoch': 3}}, 'unknown training'),
                         ({'member': {'preset': 'huge'}}, 'unknown preset'),
                         ({'head': {'degree': 2}}, 'unknown head')):
        with pytest.raises(ValueError, match=message):
            complete_fit_hyperparameters(bad)


def test_dielectric_targets_use_the_voigt_order_of_the_datasets():
    from aiida_mlresponse.ml.radnet.fit import dielectric_targets

    tensors = np.array([[[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]]])
    np.testing.assert_array_equal(dielectric_targets(tensors), [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # xx yy zz yz xz xy
    with pytest.raises(ValueError, match=r'\(n, 3, 3\)'):
        dielectric_targets(np.zeros((2, 6)))


def test_shrink_weight_is_the_clipped_least_squares_weight():
    """w = clip(<r, c> / <c, c>, 0, 1) per component over the given configurations."""
    from aiida_mlresponse.ml.radnet.fit import shrink_correction
    from aiida_mlresponse.ml.radnet.network import RadNet

    torch.manual_seed(0)
    model = RadNet(preset='tiny', n_outputs=3, dtype='float64')
    cubes = torch.rand(12, 2, 1, 9, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        correction = model.correction(cubes).numpy()
    residual = np.c_[correction[:, 0], -correction[:, 1], 0.5 * correction[:, 2]]
    weight = shrink_correction(model, cubes, residual, np.arange(12))
    np.testing.assert_allclose(weight, [1.0, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(model.residual_weight.numpy(), weight)
    with torch.no_grad():
        np.testing.assert_allclose(model(cubes).numpy(), correction * weight, atol=1e-15)
    # A larger correction than the residual is scaled down, never up past 1.
    assert shrink_correction(model, cubes, 0.25 * correction, np.arange(12)) == pytest.approx([0.25] * 3)
    assert (shrink_correction(model, cubes, 3.0 * correction, np.arange(12)) == 1.0).all()


def test_fit_head_residuals_are_out_of_fold():
    """A polynomial with as many terms as configurations interpolates them; its out-of-fold residuals do not vanish."""
    from aiida_mlresponse.ml.radnet.heads import fit_heads

    rng = np.random.default_rng(0)
    # 20 configurations, 19 cubic terms + the intercept: the full fit interpolates.
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]) + 0.05 * rng.standard_normal((20, 2, 3))
    targets = rng.standard_normal((20, 2))  # no structure to learn
    cubes = torch.zeros(20, 2, 1, 3, 3, 3)
    head, _, residual = fit_heads(positions, cubes, targets, 8.0 * np.eye(3), {'degree': 3, 'alpha': 1e-12}, None,
                                  folds=5)
    in_sample = targets - head.predict(positions)
    assert np.abs(in_sample).mean() < 1e-3 < 0.5 < np.abs(residual).mean()
    _, _, same = fit_heads(positions, cubes, targets, 8.0 * np.eye(3), {'degree': 3, 'alpha': 1e-12}, None, folds=0)
    np.testing.assert_allclose(same, in_sample, atol=1e-3)  # both interpolate (a nearly singular system)


@pytest.mark.slow
def test_fit_committee_on_real_configurations(tmp_path):
    """fit_committee on 48 GaAs configurations: the recipe is recorded, the checkpoint reloads, targets are checked."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.ml.radnet.fit import fit_committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5').subset(np.arange(60))
    train, test = np.arange(48), np.arange(48, 60)
    targets = data.targets('polarization')
    lines = []
    committee, results = fit_committee(
        data.positions[train], data.cell, data.numbers, targets[train], 'polarization',
        hyperparameters={'n_members': 2, 'cnn': True, 'head': {'degrees': [1, 2, 3], 'folds': 4, 'components': []},
                         'training': {'epochs': 4, 'batch_size': 16, 'log_every': 1}},
        log=lines.append, seed=3)
    fit = committee.hyperparameters['fit']
    assert fit['n_members'] == 2 and fit['training']['epochs'] == 4 and fit['head']['folds'] == 4
    assert fit['chosen_head']['taylor']['degree'] in (1, 2, 3) and committee.hyperparameters['target'] == 'polarization'
    assert len(results) == 2 and all(len(r.curve) <= 5 for r in results)
    for result in results:
        summary = result.summary
        assert len(summary['residual_weight']) == 3 and all(0 <= w <= 1 for w in summary['residual_weight'])
        assert summary['validation_mae'] <= summary['validation_mae_head'] * 1.5
    assert any(line.startswith('head chosen') for line in lines)
    assert any('[member 2/2] epoch 4' in line for line in lines)

    # Each member carries the chosen head, fitted on its own training part: close to the baseline fitted on all
    # the training data, but not identical, so the committee has a spread.
    chosen = fit['chosen_head']['taylor']
    baseline = TaylorBaseline(chosen['degree'], chosen['alpha']).fit(data.positions[train], targets[train], data.cell)
    heads = np.stack([member.taylor.baseline().predict(data.positions[test]) for member in committee.members])
    truth_scale = np.abs(targets[test] - targets[test].mean(0)).mean()
    assert np.abs(heads - baseline.predict(data.positions[test])).max() < 0.05 * truth_scale
    assert np.abs(heads[0] - heads[1]).max() > 0
    # The committee's central head is that baseline (fitted on all 48); its mean adds the members' mean correction.
    central = committee.central.taylor.baseline().predict(data.positions[test])
    np.testing.assert_allclose(central, baseline.predict(data.positions[test]), rtol=0, atol=1e-9 * truth_scale)
    mean, spread = committee.predict_positions(data.positions[test], data.cell, data.numbers)
    baseline_mae = np.abs(baseline.predict(data.positions[test]) - targets[test]).mean()
    assert np.abs(mean - targets[test]).mean() < 2.0 * baseline_mae and spread.shape == (12, 3) and (spread > 0).all()

    path = checkpoint.save(tmp_path / 'model.pt', committee, metadata={'target': 'polarization'},
                           curves={f'member_{k}': r.curve_arrays() for k, r in enumerate(results)})
    again, payload = checkpoint.load(path)
    assert payload['hyperparameters']['fit']['chosen_head']['taylor'] == chosen
    assert set(payload['curves']['member_0']) == {'epoch', 'train_loss', 'validation_loss', 'learning_rate', 'seconds'}
    np.testing.assert_allclose(again.predict_positions(data.positions[test], data.cell, data.numbers)[0], mean,
                               rtol=0, atol=1e-15)

    with pytest.raises(ValueError, match=r'dielectric targets must be \(48, 6\)'):
        fit_committee(data.positions[train], data.cell, data.numbers, data.dielectric[train], 'dielectric', log=None)
    with pytest.raises(ValueError, match='unknown target'):
        fit_committee(data.positions[train], data.cell, data.numbers, targets[train], 'raman', log=None)


@pytest.mark.slow
def test_committee_falls_back_to_its_head_where_the_cnn_cannot_help():
    """Labels = a linear function of the displacements + noise: the out-of-fold residual is pure noise, the CNNs
    fit the noise of their training split, and the validation weights take them (mostly) out again."""
    from aiida_mlresponse.ml.radnet.fit import fit_committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5').subset(np.arange(100))
    rng = np.random.default_rng(0)
    relative = (data.positions[:, 1] - data.positions[:, 0]).reshape(len(data), 3)
    targets = relative @ rng.standard_normal((3, 3)) + 1e-3 * rng.standard_normal((len(data), 3))
    train, test = np.arange(80), np.arange(80, 100)
    committee, results = fit_committee(
        data.positions[train], data.cell, data.numbers, targets[train], 'polarization',
        hyperparameters={'n_members': 2, 'cnn': True, 'head': {'degrees': [1], 'components': []}, 'member': {'linear_head': False},
                         'training': {'epochs': 15, 'batch_size': 8, 'learning_rate': 3e-3, 'patience': 100,
                                      'log_every': 0}}, log=None)
    for result in results:
        # Early stopping (epoch 0 = zero CNN output) and the validation weights keep the member at its head.
        summary = result.summary
        assert all(0.0 <= w <= 1.0 for w in summary['residual_weight'])
        assert summary['validation_mae'] <= 1.02 * summary['validation_mae_head']
    head = committee.members[0].taylor.baseline().predict(data.positions[test])
    mean, _ = committee.predict_positions(data.positions[test], data.cell, data.numbers)
    head_mae = np.abs(head - targets[test]).mean()
    assert np.abs(mean - targets[test]).mean() < 1.05 * head_mae


@pytest.mark.slow
def test_cube_polynomial_head_beats_the_taylor_polynomials_on_bn_dielectric():
    """200 BN configurations: the held-out selection picks a cube-polynomial head for ε∞, and on 40 unseen
    configurations it beats the linear and the quadratic Taylor polynomials fitted on the same 160."""
    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.ml.radnet.committee import atom_cubes_from
    from aiida_mlresponse.ml.radnet.fit import DEFAULT_FIT_HYPERPARAMETERS
    from aiida_mlresponse.ml.radnet.heads import fit_heads, select_heads
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'BN_cubic.h5').subset(np.arange(200))
    cubes = atom_cubes_from(dict(DEFAULT_FIT_HYPERPARAMETERS['density'], n=9)).batch(data.positions, data.cell,
                                                                                        data.numbers)
    targets = data.targets('dielectric')
    train, test = np.arange(160), np.arange(160, 200)
    head = dict(DEFAULT_FIT_HYPERPARAMETERS['head'], components=[20], degrees=[1, 2])
    taylor, polynomial, _ = select_heads(data.positions[train], cubes[train], targets[train], data.cell, head)
    assert polynomial is not None and polynomial['components'] == 20
    baseline, projection, _ = fit_heads(data.positions[train], cubes[train], targets[train], data.cell, taylor,
                                        polynomial, folds=0)
    with torch.no_grad():
        predicted = projection(cubes[test]).numpy()
    if baseline is not None:
        predicted += baseline.predict(data.positions[test])
    mae = np.abs(predicted - targets[test]).mean()
    for degree, alpha in ((1, 1e-10), (2, 1e-6)):
        other = TaylorBaseline(degree, alpha).fit(data.positions[train], targets[train], data.cell)
        assert mae < 0.7 * np.abs(other.predict(data.positions[test]) - targets[test]).mean()


def test_neighbour_cache_reuses_its_list_within_half_the_skin():
    from aiida_mlresponse.ml.radnet.committee import NeighbourCache, atom_cubes_from, DEFAULT_DENSITY
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    cell, positions, _ = gaas()
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    numbers = [31, 33]
    atom_cubes = atom_cubes_from(DEFAULT_DENSITY, torch.float64)
    cache = NeighbourCache(skin=0.5)
    first = cache.get(atom_cubes, positions, cell)
    moved = positions + np.array([[0.2, 0.1, 0.0], [0.0, -0.1, 0.05]])  # atoms within skin/2 = 0.25 Bohr
    assert cache.get(atom_cubes, moved, cell) is first
    # The reused list (with pairs beyond the cutoff, of weight 0) gives the cubes of a list made for them.
    np.testing.assert_allclose(atom_cubes.evaluate(moved, cell, numbers, first).numpy(),
                               atom_cubes(moved, cell, numbers).numpy(), rtol=0, atol=1e-13)
    assert cache.get(atom_cubes, positions + np.array([0.3, 0.0, 0.0]), cell) is not first  # beyond skin/2
    assert cache.get(atom_cubes, positions, 1.01 * cell) is not cache.get(atom_cubes, positions, cell)


def _committee_with_central_heads():
    """An untrained float64 committee with Taylor heads (members and central from different fits) on GaAs."""
    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    cell, positions, _ = gaas()
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    rng = np.random.default_rng(5)
    samples = positions + 0.02 * rng.standard_normal((30, 2, 3))
    torch.manual_seed(5)
    committee = Committee({'n_members': 3, 'central': True, 'member': {
        'preset': 'tiny', 'n_outputs': 3, 'dtype': 'float64', 'taylor': {'degree': 2, 'n_atoms': 2}}})
    targets = rng.standard_normal((30, 3))
    for k, member in enumerate(committee.members):
        member.taylor.set_from(TaylorBaseline(2, 1e-10).fit(samples[k:k + 20], targets[k:k + 20], cell))
        member.set_input_standardization(torch.rand(10, 2, 1, 9, 9, 9, dtype=torch.float64) * 3)
    committee.central.taylor.set_from(TaylorBaseline(2, 1e-10).fit(samples, targets, cell))
    committee.central.correction_weight.copy_(torch.tensor([1.0, 0.5, 0.0]))
    return committee.eval(), cell, samples


def test_committee_mean_is_the_central_heads_plus_the_members_mean_correction(tmp_path):
    """With central heads: mean = central(positions) + W mean_k w_k c_k(cubes); spread = the members' std."""
    from aiida_mlresponse.ml import checkpoint

    committee, cell, samples = _committee_with_central_heads()
    cubes = committee.atom_cubes(torch.float64).batch(samples[:5], cell, [31, 33])
    x = torch.as_tensor(samples[:5])
    with torch.no_grad():
        mean, spread = committee.predict(cubes, x)
        members = committee(cubes, x)
        corrections = torch.stack([m.residual_weight * m.correction(cubes) for m in committee.members])
        central = committee.central(cubes, x)
    weight = committee.central.correction_weight
    np.testing.assert_allclose(mean.numpy(), (central + weight * corrections.mean(0)).numpy(), rtol=1e-13)
    np.testing.assert_allclose(mean[:, 2].numpy(), central[:, 2].numpy(), rtol=1e-15)  # W = 0: the heads alone
    assert members.shape == (3, 5, 3)
    np.testing.assert_allclose(members.numpy(), np.stack([m(cubes, x).detach().numpy() for m in committee.members]),
                               rtol=1e-13)
    np.testing.assert_allclose(spread.numpy(), members.numpy().std(axis=0, ddof=1), rtol=1e-10)
    assert (spread.numpy() > 0).all()
    assert np.abs(mean.numpy() - members.numpy().mean(axis=0)).max() > 1e-3 * np.abs(mean.numpy()).max()
    # The one-structure path (written-out cube Jacobian) gives the same mean and members.
    for k in range(2):
        one_mean, one_members, _, _ = committee.values_and_jacobians(cubes[k], x[k])
        np.testing.assert_allclose(one_mean.detach().numpy(), mean[k].numpy(), rtol=1e-12)
        np.testing.assert_allclose(one_members.numpy(), members[:, k].numpy(), rtol=1e-12)

    # Round trip through a weights-only checkpoint.
    path = checkpoint.save(tmp_path / 'central.pt', committee)
    raw = torch.load(path, weights_only=True)  # version 2: the state packed into one tensor per dtype
    assert raw['version'] == 2 and 'state_dict' not in raw
    assert set(raw['packed_state']['blobs']) == {str(t.dtype).removeprefix('torch.')
                                                 for t in committee.state_dict().values()}
    again, payload = checkpoint.load(path)
    assert payload['hyperparameters']['central'] is True
    for name, tensor in committee.state_dict().items():
        assert payload['state_dict'][name].dtype == tensor.dtype and torch.equal(payload['state_dict'][name], tensor)
    assert any(key.startswith('central.taylor.') for key in payload['state_dict'])
    with torch.no_grad():
        np.testing.assert_allclose(again.predict(cubes, x)[0].numpy(), mean.numpy(), rtol=0, atol=0)

    # A checkpoint from before the central heads (no 'central' key, no central tensors) loads as it was written:
    # its mean is the members' mean.
    old = dict(payload, version=1,  # the layout of version-1 files: the state dict itself
               hyperparameters={k: v for k, v in payload['hyperparameters'].items() if k != 'central'},
               state_dict={k: v for k, v in payload['state_dict'].items() if not k.startswith('central.')})
    torch.save(old, tmp_path / 'old.pt')
    legacy, _ = checkpoint.load(tmp_path / 'old.pt')
    assert legacy.central is None
    with torch.no_grad():
        legacy_mean, legacy_spread = legacy.predict(cubes, x)
    np.testing.assert_allclose(legacy_mean.numpy(), members.numpy().mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(legacy_spread.numpy(), spread.numpy(), rtol=1e-12)
    # Central heads announced but missing from the file: refused, naming the missing tensors.
    torch.save(dict(old, hyperparameters=payload['hyperparameters']), tmp_path / 'broken.pt')
    with pytest.raises(RuntimeError, match='central.taylor'):
        checkpoint.load(tmp_path / 'broken.pt')
    with pytest.raises(ValueError, match='central heads need'):
        Committee({'n_members': 2, 'central': True, 'member': {'preset': 'tiny'}})


def test_train_committee_fits_the_central_heads_on_all_the_data():
    """train_committee: the central Taylor head is the baseline fitted on every configuration; each member's head
    is fitted on its own 80 %, so the members differ and the spread is theirs; the members' mean correction is
    weighted by its least-squares weight on the configurations the members held out."""
    from aiida_mlresponse.ml.radnet.fit import gated_weight, resample
    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5').subset(np.arange(40))
    targets = data.targets('polarization')
    cubes = Committee({'n_members': 1, 'member': {'preset': 'tiny'}}).atom_cubes().batch(data.positions, data.cell,
                                                                                         data.numbers)
    committee, _ = train_committee(
        cubes, data.positions, targets, data.cell, n_members=2, resampling='split', folds=0,
        member_hyperparameters={'preset': 'tiny', 'n_outputs': 3, 'taylor': {'degree': 2, 'n_atoms': 2,
                                                                           'alpha': 1e-8}},
        config=TrainingConfig(epochs=1, batch_size=16), log=None)
    assert committee.hyperparameters['central'] is True
    baseline = TaylorBaseline(2, 1e-8).fit(data.positions, targets, data.cell)
    x = torch.as_tensor(data.positions)
    with torch.no_grad():
        central = committee.central(cubes, x).numpy()
        mean, spread = committee.predict(cubes, x)
        members = committee(cubes, x).numpy()
        corrections = torch.stack([m.residual_weight * m.correction(cubes) for m in committee.members]).mean(0)
    scale = np.abs(targets - targets.mean(0)).mean()
    np.testing.assert_allclose(central, baseline.predict(data.positions), rtol=0, atol=1e-9 * scale)
    weight = committee.central.correction_weight.numpy()
    assert ((0 <= weight) & (weight <= 1)).all()
    np.testing.assert_allclose(mean.numpy(), central + weight * corrections.numpy(), rtol=1e-13, atol=0)
    # The weight, recomputed: members' shrunk corrections averaged over the members that held each configuration
    # out, against the residual of the central head (in-sample here: folds=0).
    held_out, count = np.zeros_like(targets), np.zeros(len(targets))
    for k, member in enumerate(committee.members):
        _, validation = resample(len(targets), 1000 * k, 'split', 0.2)
        with torch.no_grad():
            held_out[validation] += (member.residual_weight * member.correction(cubes[validation])).numpy()
        count[validation] += 1
    seen = count > 0
    expected = gated_weight(held_out[seen] / count[seen, None], (targets - central)[seen])
    np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-9)
    member_heads = np.stack([m.taylor.baseline().predict(data.positions) for m in committee.members])
    assert np.abs(member_heads[0] - member_heads[1]).max() > 1e-6 * scale
    np.testing.assert_allclose(spread.numpy(), members.std(axis=0, ddof=1), rtol=1e-10,
                               atol=1e-14 * np.abs(members).max())  # P ~1e9 times its spread: rounding
    assert (spread.numpy() > 0).all()


def test_gated_weight_keeps_only_clearly_helpful_corrections():
    from aiida_mlresponse.ml.radnet.fit import gated_weight, least_squares_weight

    rng = np.random.default_rng(0)
    signal = rng.standard_normal((300, 1))
    noise = rng.standard_normal((300, 1))
    # Component 0: the correction explains most of the residual; 1: it is independent noise, signed so that its
    # chance correlation with the residual is positive (w > 0).
    residual = np.c_[signal + 0.5 * noise, noise]
    unrelated = rng.standard_normal(300)
    correction = np.c_[signal, np.sign(unrelated @ noise[:, 0]) * unrelated]
    weight = least_squares_weight(correction, residual)
    gated = gated_weight(correction, residual)
    assert weight[0] == pytest.approx(gated[0]) and 0.8 < gated[0] <= 1.0
    assert weight[1] > 0 and gated[1] == 0.0
