"""The worked example of README "Production": the files in production/ are accepted by `verdi computer setup`,
`verdi computer configure core.ssh` and `verdi code create`, and the per-protocol options reach the ABINIT job."""

import pathlib

import pytest
import yaml
from aiida import orm
from click.testing import CliRunner

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / 'production'


def verdi(*args):
    from aiida.cmdline.commands.cmd_verdi import verdi as command

    result = CliRunner().invoke(command, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope='module')
def cluster(aiida_profile, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('cluster')
    verdi('computer', 'setup', '--config', EXAMPLES / 'cluster-computer.yaml', '-n')
    ssh = yaml.safe_load((EXAMPLES / 'cluster-ssh.yaml').read_text())
    ssh['key_filename'] = str(tmp_path / 'id_ed25519')  # verdi checks that the key file exists
    (tmp_path / 'id_ed25519').write_text('')
    (tmp_path / 'ssh.yaml').write_text(yaml.safe_dump(ssh))
    verdi('computer', 'configure', 'core.ssh', 'mycluster', '--config', tmp_path / 'ssh.yaml', '-n')
    for name in ('abinit', 'python'):
        verdi('code', 'create', 'core.code.installed', '--config', EXAMPLES / f'cluster-code-{name}.yaml', '-n')
    return orm.load_computer('mycluster')


def test_example_cluster_computer_and_codes(cluster):
    assert cluster.scheduler_type == 'core.slurm' and cluster.transport_type == 'core.ssh'
    assert cluster.get_mpirun_command() == ['srun', '-n', '{tot_num_mpiprocs}']
    assert cluster.get_default_mpiprocs_per_machine() == 32
    auth = cluster.get_authinfo(orm.User.collection.get_default()).get_auth_params()
    assert auth['username'] == 'myname' and auth['key_filename'].endswith('id_ed25519') and 'password' not in auth
    abinit = orm.load_code('abinit@mycluster')
    assert abinit.default_calc_job_plugin == 'mlresponse.abinit.response' and 'module load abinit' in abinit.prepend_text
    assert orm.load_code('mlresponse-python@mycluster').default_calc_job_plugin == 'mlresponse.train'


@pytest.mark.parametrize('protocol', ['test', 'fast', 'moderate'])
def test_per_protocol_options_reach_the_abinit_job(cluster, pseudo_families, bn_structure, protocol):
    from aiida.plugins import WorkflowFactory

    options = yaml.safe_load((EXAMPLES / 'cluster-options.yaml').read_text())[protocol]
    builder = WorkflowFactory('mlresponse.abinit.response.base').get_builder_from_protocol(
        orm.load_code('abinit@mycluster'), bn_structure, protocol=protocol, overrides={'options': options})
    assert dict(builder.abinit.metadata.options) | options == dict(builder.abinit.metadata.options)
