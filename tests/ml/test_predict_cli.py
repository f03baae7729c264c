"""`aiida-mlresponse predict` on a model file: ASE-readable structures and the radnet HDF5 layout."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from aiida_mlresponse.cli import cli
from aiida_mlresponse.ml import checkpoint
from aiida_mlresponse.ml.committee import fit_committee
from aiida_mlresponse.ml.datasets import load_radnet_h5
from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

from ..conftest import RADNET_DATA


@pytest.fixture(scope='module')
def gaas_model(tmp_path_factory):
    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5')
    committee, _ = fit_committee(data.positions[:30], data.cell, data.numbers, data.polarization[:30], 'polarization',
                                 hyperparameters={'n_members': 2, 'training': {'epochs': 2, 'log_every': 0}}, log=None)
    path = tmp_path_factory.mktemp('model') / 'p.pt'
    checkpoint.save(path, committee, metadata={'target': 'polarization', 'cell_bohr': data.cell.tolist(),
                                               'atomic_numbers': data.numbers.tolist()})
    return path, data


@pytest.mark.slow
def test_predict_ase_file_with_born_charges(gaas_model, tmp_path):
    import ase
    import ase.io

    path, data = gaas_model
    frames = [ase.Atoms(numbers=data.numbers, positions=p * BOHR_TO_ANGSTROM, cell=data.cell * BOHR_TO_ANGSTROM, pbc=True)
              for p in data.positions[100:103]]
    structures = tmp_path / 'frames.extxyz'
    ase.io.write(structures, frames)
    output = tmp_path / 'out.json'
    result = CliRunner().invoke(cli, ['predict', str(path), str(structures), '-o', str(output), '--born-charges'])
    assert result.exit_code == 0, result.output
    out = json.loads(output.read_text())
    assert np.shape(out['polarization']) == (3, 3) and np.shape(out['polarization_spread']) == (3, 3)
    zstar = np.array(out['born_charges'])
    assert zstar.shape == (3, 2, 3, 3)
    np.testing.assert_allclose(zstar.sum(axis=1), 0.0, atol=1e-10)  # acoustic sum rule
    assert out['units']['born_charges'] == 'e'


@pytest.mark.slow
def test_predict_radnet_h5_and_wrong_cell_refused(gaas_model, tmp_path):
    path, data = gaas_model
    output = tmp_path / 'out.npz'
    result = CliRunner().invoke(cli, ['predict', str(path), str(RADNET_DATA / 'GaAs.h5'), '-o', str(output)])
    assert result.exit_code == 0, result.output
    with np.load(output) as arrays:
        predicted = arrays['polarization']
    assert predicted.shape == (800, 3)
    # trained 2 epochs on 30 configurations: far from exact, but on the scale of the labels
    assert np.abs(predicted - data.polarization).max() < 10 * np.ptp(data.polarization, axis=0).max()
    result = CliRunner().invoke(cli, ['predict', str(path), str(RADNET_DATA / 'BN_cubic.h5'), '-o', str(output)])
    assert result.exit_code != 0 and 'does not have the cell and atom list' in result.output
