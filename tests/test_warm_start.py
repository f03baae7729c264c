"""Warm start of a training from the previous round's model: PCA-MLP accuracy and CPU time, the CalcJob's check."""

import numpy as np
import pytest
import torch
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.ml.pcamlp.fit import FitSettings, fit_pcamlp
from aiida_mlresponse.ml.pcamlp.metrics import nrmse
from aiida_mlresponse.ml.pcamlp.model import PCAMLPCommittee, default_hyperparameters, save
from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset
from aiida_mlresponse.ml.pcamlp.training_loop import _Plateau
from aiida_mlresponse.ml.registry import check_parent

HYPER = {'n_members': 2, 'pca_components': 6, 'scalar_hidden': [24, 24], 'field_hidden': [24, 24]}
# a cold schedule long enough to fit the synthetic surface; the warm one a fifth of its iterations or less
SETTINGS = FitSettings(epochs=150, lbfgs_iterations=300, field_epochs=40, field_lbfgs_iterations=100, batch_size=32,
                       eval_every=5, patience=None, warm_epochs=20, warm_lbfgs_iterations=60, warm_field_epochs=5,
                       warm_field_lbfgs_iterations=20)


def fit(data, rows, parent=None):
    scalars = {name: data[name][rows] for name in ('F', 'U', 'minus_TS', 'R')}
    fields = {name: data[name][rows] for name in ('rho', 'u')}
    return fit_pcamlp(data['D'][rows], scalars, fields, HYPER, stress=data['stress'][rows], settings=SETTINGS,
                      parent=parent)


@pytest.mark.usefixtures('one_torch_thread')
def test_warm_start_reaches_the_cold_error_in_less_cpu_time():
    data = synthetic_dataset(100, grid=(4, 6, 6), seed=3)
    round1, round2, test = np.arange(40), np.arange(60), np.arange(60, 100)  # round 2 adds 20 labels
    parent, _ = fit(data, round1)
    cold, cold_history = fit(data, round2)
    warm, warm_history = fit(data, round2, parent)
    assert warm_history['warm_start'] == {'scalar_net': True, 'field_net': True}
    assert cold_history['warm_start'] == {'scalar_net': False, 'field_net': False}
    assert warm_history['scalars']['epochs_run'] == 20 and cold_history['scalars']['epochs_run'] == 150
    errors = {}
    for name, model in (('parent', parent), ('cold', cold), ('warm', warm)):
        p = model.predict(data['D'][test], fields=['rho'], field_spread=False)
        errors[name] = (np.abs(p['F'][:, 0] - data['F'][test]).mean(), nrmse(p['rho'], data['rho'][test]).mean())
    # within 1.5x of the cold fit's held-out errors (F MAE, rho NRMSE), in at most half its CPU time
    assert errors['warm'][0] < 1.5 * errors['cold'][0], errors
    assert errors['warm'][1] < 1.5 * errors['cold'][1], errors
    assert warm_history['train_cpu_seconds'] < 0.5 * cold_history['train_cpu_seconds']
    # and the parent's nets started it: the same schedule from a fresh initialisation does worse on F
    fresh, _ = fit_pcamlp(data['D'][round2], {'F': data['F'][round2]}, None, HYPER, stress=data['stress'][round2],
                          settings=SETTINGS.warm())
    fresh_error = np.abs(fresh.predict(data['D'][test])['F'][:, 0] - data['F'][test]).mean()
    assert errors['warm'][0] < fresh_error, (errors, fresh_error)


def test_warm_start_skips_a_net_of_another_shape():
    data = synthetic_dataset(30, grid=(4, 6, 6), seed=4)
    settings = FitSettings(epochs=2, lbfgs_iterations=0, field_epochs=2, field_lbfgs_iterations=0, warm_epochs=0,
                           warm_lbfgs_iterations=0)  # warm: only the output layer solved, the hidden ones kept
    parent, _ = fit_pcamlp(data['D'], {'F': data['F']}, {'u': data['u']}, {**HYPER, 'field_hidden': [8, 8]},
                           settings=settings)
    model, history = fit_pcamlp(data['D'], {'F': data['F']}, {'u': data['u']}, HYPER, settings=settings, parent=parent)
    assert history['warm_start'] == {'scalar_net': True, 'field_net': False}
    for mine, theirs in zip(model.scalar_net.weights[:-1], parent.scalar_net.weights[:-1]):
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0)
    assert not torch.equal(model.scalar_net.weights[-1], parent.scalar_net.weights[-1])


def test_plateau_counts_checks_without_a_relative_improvement():
    best = torch.tensor([1.0, 1.0])
    plateau = _Plateau(best, slice(None), patience=2, min_delta=0.01)
    best.fill_(0.995)  # less than 1 %: no progress
    assert not plateau.stalled()
    best.fill_(0.9)  # progress: the count starts again
    assert not plateau.stalled()
    assert not plateau.stalled() and plateau.waited == 1
    assert plateau.stalled()
    assert not _Plateau(best, slice(None), patience=None, min_delta=0.01).stalled()


def test_training_refuses_a_parent_of_another_kind(aiida_profile, python_code, tmp_path):
    from aiida_mlresponse.data.dataset import dataset_from_radnet_h5
    from aiida_mlresponse.data.model import ModelData
    from aiida_mlresponse.models.calculation import TrainingCalculation

    from .conftest import RADNET_DATA

    check_parent('pcamlp', 'pcamlp')
    path = save(tmp_path / 'model.pt', PCAMLPCommittee(default_hyperparameters(n_members=1)))
    builder = TrainingCalculation.get_builder()
    builder.code = python_code
    builder.dataset = dataset_from_radnet_h5(RADNET_DATA / 'GaAs.h5', indices=range(10)).store()
    builder.model_kind = orm.Str('radnet')
    builder.parent_model = ModelData.from_checkpoint(path).store()
    with pytest.raises(ValueError, match='warm-starts from a `radnet_committee` model, got a `pcamlp` model'):
        run_get_node(builder)


@pytest.mark.usefixtures('one_torch_thread')
def test_radnet_members_start_from_the_parent_cnn():
    from aiida_mlresponse.ml.radnet.fit import fit_committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from .conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5').subset(np.arange(12))
    hyper = {'head': None, 'cnn': True, 'n_members': 2, 'training': {'epochs': 1}}

    def fit(parent=None, seed=0):
        return fit_committee(data.positions, data.cell, data.numbers, data.polarization, 'polarization', hyper,
                             log=None, seed=seed, parent=parent)[0]

    parent = fit(seed=5)
    warm, cold = fit(parent), fit()

    def distance(committee):  # the hidden layers of member 0 (the output layer starts at zero in every fit)
        pairs = [(p, q) for (name, p), q in zip(committee.members[0].atom_network.named_parameters(),
                                                parent.members[0].atom_network.parameters()) if 'output' not in name]
        return sum(float((p - q).norm()) for p, q in pairs)

    assert distance(warm) < 0.1 * distance(cold)
