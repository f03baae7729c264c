"""Training loop: early stopping keeps the best validation checkpoint; checkpoints load weights-only in a
fresh process; a tiny real training on the radnet data reduces the loss."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml import checkpoint, registry
from aiida_mlresponse.ml.radnet.training_loop import TrainingConfig, train

from ..conftest import RADNET_DATA


class _Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


def _overfitting_losses():
    """Training pulls w to 2, validation prefers w = 1: the validation loss falls, then rises."""
    def loss(model, indices):
        target = torch.where(indices < 100, 2.0, 1.0)
        return torch.mean((model.w - target) ** 2)
    return loss, np.arange(100), np.arange(100, 120)


def test_early_stopping_keeps_the_best_validation_checkpoint():
    loss, train_indices, validation_indices = _overfitting_losses()
    model = _Scalar()
    lines = []
    config = TrainingConfig(epochs=200, batch_size=100, learning_rate=0.05, patience=10, plateau_patience=1000)
    result = train(model, loss, train_indices, validation_indices, config, log=lines.append)
    validation = [row['validation_loss'] for row in result.curve]
    assert result.stopped_early and len(result.curve) - 1 < 200
    assert result.best_epoch == int(np.argmin(validation)) and 0 < result.best_epoch < len(validation) - 1
    assert validation[-1] > min(validation)  # it went on past the optimum ...
    # ... and came back to the best weights: w near 1, the validation loss of the best epoch.
    assert abs(float(model.w) - 1.0) < 0.06
    assert float(loss(model, torch.as_tensor(validation_indices))) == pytest.approx(min(validation), rel=1e-6)
    assert lines[0].startswith('epoch 0') and any('early stop' in line for line in lines)
    assert len(lines) == len(result.curve) + 1


def test_epoch_zero_counts_so_a_good_start_is_never_lost():
    loss, train_indices, validation_indices = _overfitting_losses()
    model = _Scalar()
    with torch.no_grad():
        model.w.fill_(1.0)  # already the validation optimum
    result = train(model, loss, train_indices, validation_indices,
                   TrainingConfig(epochs=5, batch_size=100, learning_rate=0.1), log=None)
    assert result.best_epoch == 0 and float(model.w) == 1.0


def test_checkpoint_loads_weights_only_in_a_fresh_process(tmp_path):
    from aiida_mlresponse.ml.radnet.committee import Committee

    torch.manual_seed(0)
    committee = Committee({'n_members': 2, 'member': {'preset': 'tiny', 'n_outputs': 3,
                                                       'taylor': {'degree': 1, 'n_atoms': 2}}, 'target': 'polarization'})
    for member in committee.members:
        member.output_offset.fill_(0.01)
        member.taylor.coefficients.normal_()
    cubes = torch.rand(4, 2, 1, 9, 9, 9)
    positions = torch.rand(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = committee(cubes, positions).numpy()
    path = checkpoint.save(tmp_path / 'model.pt', committee, metadata={'units': 'e/Bohr^2'},
                           curves={'member_0': {'epoch': torch.arange(3), 'validation_loss': torch.rand(3)}})
    torch.save({'cubes': cubes, 'positions': positions}, tmp_path / 'inputs.pt')
    script = f"""
import json, torch
from aiida_mlresponse.ml import checkpoint
raw = torch.load({str(path)!r}, weights_only=True)
model, payload = checkpoint.load({str(path)!r})
inputs = torch.load({str(tmp_path / 'inputs.pt')!r}, weights_only=True)
with torch.no_grad():
    values = model(inputs['cubes'], inputs['positions'])
print(json.dumps({{'kind': payload['kind'], 'units': payload['metadata']['units'], 'values': values.tolist(),
                  'curve': payload['curves']['member_0']['epoch'].tolist(), 'type': type(model).__name__}}))
"""
    process = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True)
    loaded = json.loads(process.stdout.strip().splitlines()[-1])
    assert loaded['kind'] == 'radnet_committee' and loaded['type'] == 'Committee'
    assert loaded['units'] == 'e/Bohr^2' and loaded['curve'] == [0, 1, 2]
    np.testing.assert_allclose(np.array(loaded['values']), expected, rtol=1e-12, atol=1e-15)


def test_checkpoint_rejects_unknown_kinds_and_foreign_files(tmp_path):
    model = _Scalar()
    with pytest.raises(KeyError, match='unknown model kind'):
        checkpoint.save(tmp_path / 'x.pt', model, kind='nope', hyperparameters={})
    torch.save({'w': torch.zeros(1)}, tmp_path / 'foreign.pt')
    with pytest.raises(ValueError, match='not an'):
        checkpoint.load(tmp_path / 'foreign.pt')
    registry.register_kind('scalar_for_test', lambda hyperparameters: _Scalar())
    try:
        checkpoint.save(tmp_path / 's.pt', model, kind='scalar_for_test', hyperparameters={'a': 1})
        again, payload = checkpoint.load(tmp_path / 's.pt')
        assert isinstance(again, _Scalar) and payload['hyperparameters'] == {'a': 1}
    finally:
        registry.KINDS.pop('scalar_for_test')


@pytest.mark.slow
def test_tiny_real_training_on_radnet_data_reduces_the_loss(one_torch_thread):
    """Twelve real BN configurations, P residual of a linear Taylor head: the CNN lowers the training loss."""
    from aiida_mlresponse.ml.radnet.committee import atom_cubes_from, DEFAULT_DENSITY
    from aiida_mlresponse.ml.radnet.fit import train_committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5').subset(np.arange(24))
    cubes = atom_cubes_from(DEFAULT_DENSITY).batch(data.positions, data.cell, data.numbers)
    lines = []
    committee, results = train_committee(
        cubes, data.positions, data.targets('dielectric'), data.cell, n_members=2,
        member_hyperparameters={'preset': 'tiny', 'n_outputs': 6}, config=TrainingConfig(epochs=40, batch_size=8, learning_rate=1e-3),
        log=lines.append)
    for result in results:
        train_losses = [row['train_loss'] for row in result.curve]
        assert min(train_losses) < 0.6 * train_losses[0]
        assert result.best_validation_loss <= result.curve[0]['validation_loss']
        assert result.curve_arrays()['validation_loss'].shape == (len(result.curve),)
    mean, spread = committee.predict_positions(data.positions[:3], data.cell, data.numbers)
    assert mean.shape == (3, 6) and (spread > 0).all()
    assert any(line.startswith('[member 2/2] epoch ') for line in lines)
