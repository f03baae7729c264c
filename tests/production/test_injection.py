"""No input value reaches ABINIT's input file or the job script as anything but data: structure kind names and
labels, protocol overrides (ABINIT variables and scheduler options), code paths and file names are refused before
submission or written quoted. Checked on dry runs: the files AiiDA would upload, nothing submitted."""

import pathlib
import shlex

import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import CalculationFactory, WorkflowFactory

PWNED = '/tmp/aiida_mlresponse_pwned'
INJECTIONS = [f'x\nnatom 100', f'x; touch {PWNED}', f'x`touch {PWNED}`', f'x$(touch {PWNED})', 'x"\npseudos "/etc/passwd']


def response_builder(code, structure, **kwargs):
    return WorkflowFactory('mlresponse.abinit.response.base').get_builder_from_protocol(code, structure, protocol='test',
                                                                                        **kwargs)


def dry_run(builder, tmp_path, monkeypatch) -> dict:
    """{file name: text} of the folder the ABINIT CalcJob of `builder` would upload (the work chain's `abinit`)."""
    monkeypatch.chdir(tmp_path)
    inputs = builder.abinit._inputs(prune=True)
    inputs['metadata'] = {**inputs.get('metadata', {}), 'dry_run': True, 'store_provenance': False}
    _, node = run_get_node(CalculationFactory('mlresponse.abinit.response'), **inputs)
    folder = pathlib.Path(node.dry_run_info['folder'])
    return {path.name: path.read_text() for path in folder.iterdir() if path.is_file()}


def commands(script: str) -> list[list[str]]:
    """The job script's lines as the shell splits them (comments, i.e. scheduler directives, dropped)."""
    return [shlex.split(line, comments=True) for line in script.splitlines() if shlex.split(line, comments=True)]


@pytest.fixture(scope='module')
def slurm_code(aiida_profile):
    """A `core.slurm` computer (never contacted: dry runs only write the job script)."""
    computer = orm.Computer(label='injection-slurm', hostname='localhost', transport_type='core.local',
                            scheduler_type='core.slurm', workdir='/tmp/aiida_injection').store()
    computer.configure()
    return orm.InstalledCode(label='abinit', computer=computer, filepath_executable='/usr/bin/abinit',
                             default_calc_job_plugin='mlresponse.abinit.response').store()


def test_clean_dry_run_control(slurm_code, pseudo_families, bn_structure, tmp_path, monkeypatch):
    files = dry_run(response_builder(slurm_code, bn_structure), tmp_path, monkeypatch)
    assert files['aiida.abi'].count('natom') == 1 and '#SBATCH --time=00:10:00' in files['_aiidasubmit.sh']


@pytest.mark.parametrize('name', INJECTIONS + ['B, N', '../B'])
def test_kind_names_cannot_inject(slurm_code, pseudo_families, bn_structure, tmp_path, monkeypatch, name):
    structure = orm.StructureData(cell=bn_structure.cell)
    for site in bn_structure.sites:
        kind = bn_structure.get_kind(site.kind_name)
        structure.append_atom(position=site.position, symbols=kind.symbol, name=name if kind.symbol == 'B' else 'N')
    with pytest.raises(ValueError):
        dry_run(response_builder(slurm_code, structure), tmp_path, monkeypatch)


@pytest.mark.parametrize('label', INJECTIONS)
def test_structure_label_and_description_stay_out_of_the_input(slurm_code, pseudo_families, bn_structure, tmp_path,
                                                                monkeypatch, label):
    structure = bn_structure.clone()
    structure.label, structure.description = label, label
    files = dry_run(response_builder(slurm_code, structure), tmp_path, monkeypatch)
    assert files['aiida.abi'].count('natom') == 1 and 'touch' not in files['aiida.abi'] and '/etc/passwd' not in files['aiida.abi']


@pytest.mark.parametrize('parameters', [
    {'ecut': '12\nnatom 100'}, {'ecut': '12 pseudos "/etc/passwd"'}, {'ecut\nnatom': 100}, {'ecut; natom': 1},
    {'pp_dirpath': '/etc'}, {'natom': 100}, {'ecut': ['12', '\nnatom 100']},
])
def test_parameter_overrides_cannot_inject_abinit_variables(slurm_code, pseudo_families, bn_structure, parameters):
    with pytest.raises(ValueError):
        response_builder(slurm_code, bn_structure, overrides={'parameters': parameters})


DIRECTIVES = ('queue_name', 'account', 'qos', 'scheduler_stdout', 'scheduler_stderr')  # written as `#SBATCH` lines
# A newline in an option that becomes a `#SBATCH` line would start a shell line of its own: the ABINIT CalcJob
# base refuses '\n', '\r' and '\0' in every one-line option (`calculations.base.validate_options`).


@pytest.mark.parametrize('option, value', [
    (option, value) for option in DIRECTIVES + ('input_filename', 'output_filename') for value in INJECTIONS
])
def test_option_overrides_cannot_inject_shell(slurm_code, pseudo_families, bn_structure, tmp_path, monkeypatch,
                                              option, value):
    """A scheduler option from a protocol override either is refused before submission or stays one word of data."""
    try:
        builder = response_builder(slurm_code, bn_structure, overrides={'options': {option: value}})
        files = dry_run(builder, tmp_path, monkeypatch)
    except ValueError:
        return
    script = files['_aiidasubmit.sh']
    for words in commands(script):
        assert 'touch' not in words[0] and not any(word.startswith('natom') for word in words), script
    directives = [line for line in script.splitlines() if line.startswith('#SBATCH')]
    assert all('\n' not in line for line in directives)
    assert not any(line.startswith('natom') or line.startswith('pseudos') for line in script.splitlines()), script


@pytest.mark.parametrize('path', [f'/usr/bin/abinit; touch {PWNED}', f'/usr/bin/abinit$(touch {PWNED})'])
def test_code_path_is_quoted_in_the_job_script(slurm_code, pseudo_families, bn_structure, tmp_path, monkeypatch, path):
    code = orm.InstalledCode(label='odd', computer=slurm_code.computer, filepath_executable=path,
                             default_calc_job_plugin='mlresponse.abinit.response').store()
    files = dry_run(response_builder(code, bn_structure), tmp_path, monkeypatch)
    run_line = [words for words in commands(files['_aiidasubmit.sh']) if path in words]
    assert run_line and run_line[0][0] == path, files['_aiidasubmit.sh']


def test_training_inputs_stay_data(slurm_code, tmp_path, monkeypatch):
    """The training job's command line is fixed; model kind is checked; hyperparameters go to a JSON file."""
    import json
    import sys

    from aiida_mlresponse.data.dataset import dataset_from_radnet_h5

    from ..conftest import RADNET_DATA

    python = orm.InstalledCode(label='python-injection', computer=slurm_code.computer, filepath_executable=sys.executable,
                               default_calc_job_plugin='mlresponse.train').store()
    training = CalculationFactory('mlresponse.train')
    inputs = {'code': python, 'dataset': dataset_from_radnet_h5(RADNET_DATA / 'GaAs.h5', indices=range(4)),
              'model_kind': orm.Str(f'radnet; touch {PWNED}')}
    with pytest.raises(ValueError):
        run_get_node(training, **inputs)
    monkeypatch.chdir(tmp_path)
    inputs['model_kind'] = orm.Str('radnet')
    inputs['hyperparameters'] = orm.Dict({'target': 'polarization', 'note': INJECTIONS[1] + INJECTIONS[0]})
    _, node = run_get_node(training, **inputs, metadata={'dry_run': True, 'store_provenance': False})
    folder = pathlib.Path(node.dry_run_info['folder'])
    run_line = [words for words in commands((folder / '_aiidasubmit.sh').read_text()) if sys.executable in words]
    assert run_line[0][:6] == [sys.executable, '-m', 'aiida_mlresponse.ml.train_entry', 'config.json', 'dataset.npz', 'model.pt']
    assert json.loads((folder / 'config.json').read_text())['hyperparameters']['note'] == INJECTIONS[1] + INJECTIONS[0]
