"""A one-node SLURM cluster (slurmctld + slurmd + munge on this machine) and an AiiDA computer on it (`core.slurm`
scheduler, `core.local` transport): an ABINIT labelling job and a training job go through the queue with the
resources, walltime and partition of the protocol's `options`."""

import subprocess

import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import CalculationFactory, WorkflowFactory

from ..conftest import RADNET_DATA

pytestmark = [pytest.mark.production, pytest.mark.slow]


def test_slurm_listens_on_loopback_only(slurm_partition):
    """slurmctld (6817) and slurmd (6818) bind to loopback (CommunicationParameters=NoCtldInAddrAny,NoInAddrAny)."""
    from .test_services import assert_no_connection_from_outside, listening_sockets

    sockets = [(address, port) for address, port in listening_sockets() if port in (6817, 6818)]
    assert {port for _, port in sockets} == {6817, 6818}, sockets
    assert all(address.is_loopback for address, _ in sockets), sockets
    assert_no_connection_from_outside([6817, 6818])


def slurm_job(job_id: str) -> dict:
    """`scontrol show job` as a dict (finished jobs stay listed for MinJobAge, 600 s in our slurm.conf)."""
    text = subprocess.run(['scontrol', 'show', 'job', job_id], capture_output=True, text=True, check=True).stdout
    return dict(item.split('=', 1) for item in text.split() if '=' in item)


def test_abinit_and_training_jobs_through_slurm(slurm_codes, slurm_partition, pseudo_families, bn_structure):
    base = WorkflowFactory('mlresponse.abinit.response.base')
    builder = base.get_builder_from_protocol(slurm_codes['abinit'], bn_structure, protocol='test',
                                             overrides={'options': {'queue_name': slurm_partition}})
    options = dict(builder.abinit.metadata.options)
    assert options['max_wallclock_seconds'] == 600 and options['queue_name'] == slurm_partition
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['output_arrays'].get_array('polarization').shape == (3,)
    calc = [c for c in node.called if isinstance(c, orm.CalcJobNode)][-1]
    assert calc.computer.scheduler_type == 'core.slurm'
    job = slurm_job(calc.get_job_id())
    assert job['JobState'] == 'COMPLETED' and job['Partition'] == slurm_partition
    assert job['TimeLimit'] == '00:10:00' and job['NumNodes'] == '1' and job['NumTasks'] == '1'

    # A tiny training job through the same queue, with the options the ABINIT job ran with.
    from aiida_mlresponse.data.dataset import dataset_from_radnet_h5

    training = CalculationFactory('mlresponse.train').get_builder()
    training.code = slurm_codes['mlresponse-python']
    training.dataset = dataset_from_radnet_h5(RADNET_DATA / 'GaAs.h5', indices=range(20)).store()
    training.model_kind = orm.Str('radnet')
    training.hyperparameters = orm.Dict({'target': 'polarization', 'n_members': 2, 'seed': 1,
                                         'training': {'epochs': 2, 'log_every': 1}})
    training.metadata.options = {key: calc.get_option(key) for key in ('resources', 'max_wallclock_seconds', 'queue_name')}
    results, node = run_get_node(training)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['model'].kind == 'radnet_committee'
    job = slurm_job(node.get_job_id())
    assert job['JobState'] == 'COMPLETED' and job['Partition'] == slurm_partition and job['TimeLimit'] == '00:10:00'
