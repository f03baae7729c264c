"""Every `aiida-mlresponse` entry point answers bad input with one `Error:` line and a non-zero exit, no traceback:
missing file, wrong format, crafted pickle, wrong model kind, wrong cell, empty file, unknown node, no profile."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from aiida import orm
from click.testing import CliRunner

from aiida_mlresponse.cli import cli

PWNED = pathlib.Path('/tmp/aiida_mlresponse_pwned')


class Crafted:
    """Unpickling this runs a shell command: a model file must never do that."""

    def __reduce__(self):
        return (os.system, (f'touch {PWNED}',))


def assert_one_line_error(result, *expected):
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0], errors[0]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A real (untrained) GaAs model file, and every bad file."""
    import ase
    import ase.io

    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.registry import builder
    from aiida_mlresponse.physics.crystals import bn_cubic, gaas
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    folder = tmp_path_factory.mktemp('cli')
    cell, positions, symbols = gaas()
    committee = builder('radnet_committee')({'n_members': 1, 'member': {'preset': 'tiny', 'n_outputs': 3}})
    checkpoint.save(folder / 'gaas.pt', committee, kind='radnet_committee',
                    metadata={'target': 'polarization', 'cell_bohr': (np.asarray(cell) * ANGSTROM_TO_BOHR).tolist(),
                              'atomic_numbers': [31, 33]})
    torch.save({'format': 'aiida-mlresponse-model', 'version': 2, 'kind': 'nonsense', 'hyperparameters': {},
                'state_dict': {}, 'metadata': {}}, folder / 'kind.pt')
    torch.save({'format': 'aiida-mlresponse-model', 'weights': Crafted()}, folder / 'crafted.pt')
    (folder / 'not_a_model.pt').write_text('index,value\n1,2\n')
    (folder / 'empty.pt').write_bytes(b'')
    (folder / 'empty.xyz').write_bytes(b'')
    (folder / 'garbage.xyz').write_text('this is not\na structure file\n')
    ase.io.write(folder / 'gaas.extxyz', ase.Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True))
    cell, positions, symbols = bn_cubic()
    ase.io.write(folder / 'bn.extxyz', ase.Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True))
    return folder


def test_predict_works_on_good_input(files, tmp_path):
    """The control: the same files the bad-input tests start from do predict."""
    result = invoke('predict', files / 'gaas.pt', files / 'gaas.extxyz', '-o', tmp_path / 'out.json')
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize('model, structures, expected', [
    ('missing.pt', 'gaas.extxyz', ['model file', 'missing.pt does not exist']),
    ('not_a_model.pt', 'gaas.extxyz', ['is not an aiida-mlresponse model file']),
    ('empty.pt', 'gaas.extxyz', ['empty.pt is empty']),
    ('kind.pt', 'gaas.extxyz', ['unknown model kind `nonsense`']),
    ('gaas.pt', 'bn.extxyz', ['does not have the cell and atom list']),
    ('gaas.pt', 'missing.xyz', ['structures file', 'does not exist']),
    ('gaas.pt', 'empty.xyz', ['empty.xyz is empty']),
    ('gaas.pt', 'garbage.xyz', ['cannot read structures from']),
    ('gaas.pt', 'not_a_model.pt', ['cannot read structures from']),
])
def test_predict_bad_files(aiida_profile, files, tmp_path, model, structures, expected):
    assert_one_line_error(invoke('predict', files / model, files / structures, '-o', tmp_path / 'o.npz'), *expected)


def test_predict_refuses_crafted_pickle_without_running_it(files, tmp_path):
    PWNED.unlink(missing_ok=True)
    result = invoke('predict', files / 'crafted.pt', files / 'gaas.extxyz', '-o', tmp_path / 'o.npz')
    assert_one_line_error(result, 'refused', 'nothing was loaded')
    assert not PWNED.exists()


def test_predict_path_is_not_taken_for_a_node_label(aiida_profile, files, tmp_path):
    orm.Int(1).store().base.extras.set('x', 1)
    for value in ('runs/model.pt', 'model', 'no-such-model.pt'):
        result = invoke('predict', value, files / 'gaas.extxyz', '-o', tmp_path / 'o.npz')
        assert_one_line_error(result, 'does not exist')
        assert 'LABEL' not in result.output and 'NotExistent' not in result.output


def test_predict_node_of_wrong_type_and_missing_node(aiida_profile, files, tmp_path):
    node = orm.Dict({'a': 1}).store()
    assert_one_line_error(invoke('predict', node.pk, files / 'gaas.extxyz', '-o', tmp_path / 'o.npz'),
                          'is a Dict, not a ModelData')
    assert_one_line_error(invoke('predict', 987654321, files / 'gaas.extxyz', '-o', tmp_path / 'o.npz'),
                          'no node with pk 987654321')
    assert_one_line_error(invoke('predict', files / 'gaas.pt', files / 'gaas.extxyz', '-o', tmp_path / 'no' / 'o.npz'),
                          'does not exist')


@pytest.mark.parametrize('command, node_type', [('calcs', 'DatasetData'), ('datasets', 'CalcJobNode')])
def test_provenance_bad_identifiers(aiida_profile, command, node_type):
    node = orm.Dict({'a': 1}).store()
    assert_one_line_error(invoke('provenance', command, node.pk), f'is a Dict, not a {node_type}')
    assert_one_line_error(invoke('provenance', command, 987654321), 'no node with pk 987654321')
    assert_one_line_error(invoke('provenance', command, node.uuid[:8] + 'zz'), f'is not a {node_type} pk or uuid')
    assert_one_line_error(invoke('provenance', command, 'runs/dataset.npz'), f'is not a {node_type} pk or uuid')


@pytest.mark.parametrize('command, node_type', [(['campaign', 'show'], 'work chain'), (['campaign', 'why'], 'DatasetData')])
def test_campaign_bad_identifiers(aiida_profile, command, node_type):
    extra = ['0'] if command[1] == 'why' else []
    node = orm.Dict({'a': 1}).store()
    assert_one_line_error(invoke(*command, node.pk, *extra), f'is a Dict, not a {node_type}')
    assert_one_line_error(invoke(*command, 987654321, *extra), 'no node with pk 987654321')
    assert_one_line_error(invoke(*command, 'runs/campaign', *extra), f'is not a {node_type} pk or uuid')


def test_dataset_bad_input(aiida_profile, files, tmp_path):
    node = orm.Dict({'a': 1}).store()
    assert_one_line_error(invoke('dataset', 'export', node.pk, tmp_path / 'd.npz'), 'not a DatasetData')
    assert_one_line_error(invoke('dataset', 'export', 987654321, tmp_path / 'd.npz'))
    assert_one_line_error(invoke('dataset', 'import', files / 'missing.npz'), 'does not exist')
    assert_one_line_error(invoke('dataset', 'import', files / 'empty.pt'))
    assert_one_line_error(invoke('dataset', 'import', files / 'not_a_model.pt'))
    np.save(tmp_path / 'objects.npy', np.array([Crafted()], dtype=object), allow_pickle=True)
    PWNED.unlink(missing_ok=True)
    assert_one_line_error(invoke('dataset', 'import', tmp_path / 'objects.npy'))
    assert not PWNED.exists()
    assert_one_line_error(invoke('dataset', 'harvest', node.pk), 'not a WorkChainNode')
    assert_one_line_error(invoke('dataset', 'harvest', 'my-campaign'), 'not a WorkChainNode pk or uuid')
    other = orm.WorkChainNode()
    other.set_process_label('ActiveLearningWorkChain')
    other.store()
    assert_one_line_error(invoke('dataset', 'harvest', other.pk), 'not a LabelsWorkChain')


def test_setup_bad_input(monkeypatch):
    assert_one_line_error(invoke('setup', '--slurm'), '--slurm needs --production')
    assert_one_line_error(invoke('setup', '--production', '--profile-name', 'a;rm -rf x'), 'profile-name')
    monkeypatch.setenv('PATH', '/nonexistent')
    assert_one_line_error(invoke('setup'), 'ABINIT executable(s) not found')


@pytest.mark.parametrize('args', [
    ['predict', '12', 'structures.xyz', '-o', 'o.npz'],
    ['provenance', 'calcs', '12'],
    ['provenance', 'datasets', '12'],
    ['dataset', 'export', '12', 'o.npz'],
    ['dataset', 'import', 'structures.xyz'],
    ['campaign', 'repair'],
    ['campaign', 'show', '12'],
    ['campaign', 'why', '12', '0'],
])
def test_no_profile(tmp_path, args):
    """A fresh machine: no AiiDA config at all. One line that says to run setup."""
    (tmp_path / 'structures.xyz').write_text('1\n\nH 0 0 0\n')
    env = dict(os.environ, AIIDA_PATH=str(tmp_path / 'empty'), PYTHONWARNINGS='ignore')
    (tmp_path / 'empty').mkdir()
    done = subprocess.run([sys.executable, '-c', 'from aiida_mlresponse.cli import cli; cli()', *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and 'Traceback' not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith('Error:')]
    assert len(errors) == 1 and 'no AiiDA profile' in errors[0] and 'aiida-mlresponse setup' in errors[0], done.stderr
