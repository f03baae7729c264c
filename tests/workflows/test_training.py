"""Training through the TrainingCalculation CalcJob on real radnet data, and loading the model node."""

import os
import subprocess
import sys

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.data.dataset import DatasetData, dataset_from_radnet_h5
from aiida_mlresponse.models.calculation import TrainingCalculation

from ..conftest import RADNET_DATA

TINY = {'target': 'polarization', 'n_members': 2, 'cnn': True, 'seed': 1, 'training': {'epochs': 3, 'log_every': 1}}


@pytest.fixture
def gaas_dataset(aiida_profile):
    return dataset_from_radnet_h5(RADNET_DATA / 'GaAs.h5', indices=range(40)).store()


@pytest.mark.slow
def test_training_calcjob_on_real_data_and_model_in_fresh_process(python_code, gaas_dataset, tmp_path):
    builder = TrainingCalculation.get_builder()
    builder.code = python_code
    builder.dataset = gaas_dataset
    builder.model_kind = orm.Str('radnet')
    builder.hyperparameters = orm.Dict(TINY)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    model = results['model']
    assert model.kind == 'radnet_committee'
    summary = results['output_parameters'].get_dict()
    assert len(summary['members']) == 2
    log = node.outputs.retrieved.base.repository.get_object_content('training.log')
    assert 'model written to model.pt' in log and 'epoch' in log

    # the model node loads in a fresh process and predicts near the labels it was trained on
    script = (
        'import sys, numpy as np\n'
        'from aiida import load_profile, orm\n'
        'load_profile(sys.argv[1])\n'
        'from aiida_mlresponse.ml.radnet.predict import predict_response\n'
        'committee, payload = orm.load_node(int(sys.argv[2])).load()\n'
        'ds = orm.load_node(int(sys.argv[3]))\n'
        'from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR as A\n'
        'md = payload["metadata"]\n'
        'out = predict_response(committee, md, ds.get_array("positions")[:5] * A, np.array(md["cell_bohr"]), md["atomic_numbers"])\n'
        'print(np.abs(out["polarization"] - ds.get_array("polarization")[:5]).max())\n'
    )
    from aiida.manage import get_manager
    from aiida.manage.configuration import get_config

    profile = get_manager().get_profile().name
    env = dict(os.environ, AIIDA_PATH=get_config().dirpath)
    completed = subprocess.run([sys.executable, '-c', script, profile, str(model.pk), str(gaas_dataset.pk)],
                               capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    error = float(completed.stdout.strip().splitlines()[-1])
    spread_of_labels = np.ptp(gaas_dataset.get_array('polarization'), axis=0).max()
    assert error < spread_of_labels


def test_mismatched_inputs_refused_before_submission(python_code, gaas_dataset):
    builder = TrainingCalculation.get_builder()
    builder.code = python_code
    builder.dataset = gaas_dataset
    builder.model_kind = orm.Str('pcamlp')
    with pytest.raises(ValueError, match='trains on a `mg_strain` dataset'):
        run_get_node(builder)
    builder.model_kind = orm.Str('radnet')
    builder.hyperparameters = orm.Dict({'target': 'phonons'})
    with pytest.raises(ValueError, match='unknown target `phonons`'):
        run_get_node(builder)
    with pytest.raises(ValueError, match='unknown model kind'):
        builder.model_kind = orm.Str('schnet')


@pytest.fixture
def mg_dataset(aiida_profile):
    """An `mg_strain` dataset with the arrays the labelling work chain writes, from the analytic stand-in."""
    from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset, synthetic_mg_strain

    data = synthetic_dataset(60, grid=(4, 6, 6), seed=3)
    dataset = DatasetData()
    dataset.set_rows('mg_strain', synthetic_mg_strain(60, grid=(4, 6, 6), seed=3))
    return dataset.store(), data


@pytest.mark.slow
def test_pcamlp_training_through_the_calcjob(python_code, mg_dataset):
    """The same CalcJob and model node format train the PCA-MLP family; the F head sees the stress."""
    dataset, data = mg_dataset
    builder = TrainingCalculation.get_builder()
    builder.code = python_code
    builder.dataset = dataset
    builder.model_kind = orm.Str('pcamlp')
    builder.hyperparameters = orm.Dict({
        'hyperparameters': {'n_members': 2, 'pca_components': 4, 'field_hidden': [16, 16]},
        'epochs': 20, 'lbfgs_iterations': 100, 'field_epochs': 5, 'field_lbfgs_iterations': 20, 'batch_size': 32,
    })
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    model = results['model']
    assert model.kind == 'pcamlp'
    assert set(results['output_parameters']['members']) == {'scalars', 'fields'}
    committee, payload = model.load()
    assert payload['metadata']['n_train'] == 60
    p = committee.predict(data['D'], fields=['rho'])
    assert p['rho'].shape == data['rho'].shape
    f_error = np.abs(p['F'][:, 0] - data['F']).mean()
    assert f_error < 0.2 * np.abs(data['F'] - data['F'].mean()).mean()  # far better than the mean
    assert model.hyperparameters['pca_dims'] == {name: 4 for name in ('rho', 'phi', 'u', 's')}
