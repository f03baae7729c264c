"""Faults of a labelling campaign on the one-node SLURM cluster (`core.slurm`):

- an ABINIT job killed by SLURM at its walltime: the restart handler runs it again with twice the walltime;
- a corrupt pseudopotential file in one job's folder: ABINIT crashes, the job fails with ERROR_ABINIT naming the
  file, the configuration is left out with its reason and the campaign finishes with the others.
"""

import pathlib
import subprocess
import threading
import time

import os

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.abinit.parsers.base import crash_message

from .conftest import record_fault
from .test_slurm import slurm_job

# The order in which a real ABINIT 9.6 log holds a crash on a truncated psp8 file: gfortran's message on stderr comes
# before the buffered stdout that says which file was being read.
CRASH_LOG = '''
 getcut: wavevector=  0.0000  0.0000  0.0000  ngfft=  16  16  16
Fortran runtime error: End of file

Error termination. Backtrace:
- pspini: atom type   1  psp file is pseudo/B.psp8
- pspatm: opening atomic psp file    pseudo/B.psp8
- B     ONCVPSP-3.3.0  r_core=   1.20849   1.20849
'''


def test_crash_message_names_the_unreadable_pseudopotential():
    assert crash_message(CRASH_LOG) == ('Fortran runtime error: End of file while reading the pseudopotential '
                                        'pseudo/B.psp8 (corrupt or truncated?)')
    read_through = CRASH_LOG + ' pspatm: atomic psp has been read  and splines computed\n'
    assert crash_message(read_through) == 'Fortran runtime error: End of file'
    assert crash_message('Calculation completed.\n') is None


def reports(node):
    return [log.message for log in orm.Log.collection.get_logs_for(node)]


def held_jobs() -> list[int]:
    out = subprocess.run(['squeue', '-h', '-t', 'PD', '-o', '%i %r'], capture_output=True, text=True).stdout
    return sorted(int(job) for job, reason in (line.split(None, 1) for line in out.splitlines()) if 'Held' in reason)


class ReleaseHeldJobs(threading.Thread):
    """Release every job submitted held (`#SBATCH --hold`); before releasing the `corrupt`-th one (counted from 1),
    truncate its copy of the B pseudopotential, as a bad disk or an interrupted copy would."""

    def __init__(self, corrupt: int):
        super().__init__(daemon=True)
        self.corrupt, self.seen, self.corrupted, self.stop = corrupt, [], [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            for job in held_jobs():
                if job not in self.seen:
                    self.seen.append(job)
                if len(self.seen) >= self.corrupt and job == self.seen[self.corrupt - 1] and not self.corrupted:
                    pseudo = pathlib.Path(slurm_job(str(job))['WorkDir']) / 'pseudo' / 'B.psp8'
                    pseudo.write_bytes(pseudo.read_bytes()[:1500])
                    self.corrupted.append(job)
                subprocess.run(['scontrol', 'release', str(job)], capture_output=True)
            time.sleep(0.5)


@pytest.mark.production
@pytest.mark.slow
def test_corrupt_pseudopotential_leaves_one_configuration_out(slurm_codes, pseudo_families, bn_structure):
    from aiida.common.log import configure_logging

    from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_displacement_configurations

    configure_logging(with_orm=True)  # reports into the database, as under the daemon
    configurations = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(3), orm.Int(31))
    builder = LabelsWorkChain.get_builder_from_protocol(
        slurm_codes['abinit'], configurations, 'response', reference=bn_structure, protocol='test', max_concurrent=3,
        overrides={'options': {'custom_scheduler_commands': '#SBATCH --hold'}})
    releaser = ReleaseHeldJobs(corrupt=3)  # the reference, then configurations 0, 1, 2: configuration 1
    releaser.start()
    try:
        results, node = run_get_node(builder)
    finally:
        releaser.stop.set()
    assert releaser.corrupted, 'no job was corrupted'
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['dataset'].size == 2
    failed = results['failed'].get_dict()
    assert list(failed) == ['1'] and failed['1']['exit_status'] == 300, failed
    assert 'configuration 1 left out' in ' '.join(reports(node))

    # the CalcJob says what crashed and where; its restart work chain stopped at once (no rerun of a broken input)
    base = orm.load_node(failed['1']['pk'])
    calcs = [c for c in base.called if isinstance(c, orm.CalcJobNode)]
    assert len(calcs) == 1 and calcs[0].get_job_id() == str(releaser.corrupted[0])
    assert calcs[0].exit_status == 405 and 'pseudo/B.psp8' in calcs[0].exit_message, calcs[0].exit_message
    assert any('pseudo/B.psp8' in message for message in reports(base)), reports(base)
    print(f'corrupt pseudopotential: {calcs[0].exit_status} {calcs[0].exit_message}; '
          f'{results["dataset"].size} of 3 configurations labelled')
    runs = [c for c in node.called_descendants if isinstance(c, orm.CalcJobNode)]
    record_fault('corrupt_pseudopotential', {
        'what': 'B pseudopotential truncated in one SLURM job folder of a 3-configuration BN labelling job',
        'calcjob_exit_status': calcs[0].exit_status, 'calcjob_exit_message': calcs[0].exit_message,
        'restart_exit_status': base.exit_status, 'labels': results['dataset'].size, 'configurations': 3,
        'left_out': len(failed), 'abinit_runs': len(runs), 'repeated': len(runs) - 4})


# The first ABINIT run is frozen (SIGSTOP) a few seconds in, so SLURM's 1-minute limit kills it mid-run without
# burning a core for a minute; the marker file makes the restart run normally.
FREEZE_ONCE = '[ -e {marker} ] || {{ touch {marker}; ( sleep 3; pkill -STOP -P $$ -x abinit ) & }}'


@pytest.mark.production
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('MLRESPONSE_FAULT_TESTS') != '1', reason='2 min of waiting for SLURM: make test-faults')
def test_walltime_kill_by_slurm_is_restarted(slurm_codes, pseudo_families, bn_structure, tmp_path):
    from aiida.common.log import configure_logging

    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

    configure_logging(with_orm=True)
    options = {'max_wallclock_seconds': 60, 'prepend_text': FREEZE_ONCE.format(marker=tmp_path / 'frozen')}
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(slurm_codes['abinit'], bn_structure, protocol='test',
                                                                    overrides={'options': options})
    began = time.monotonic()
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    killed, again = sorted((c for c in node.called if isinstance(c, orm.CalcJobNode)), key=lambda c: c.ctime)
    assert 'DUE TO TIME LIMIT' in killed.outputs.retrieved.base.repository.get_object_content('_scheduler-stderr.txt')
    assert killed.exit_status == 400, (killed.exit_status, killed.exit_message)  # ERROR_OUT_OF_WALLTIME
    assert slurm_job(killed.get_job_id())['JobState'] == 'TIMEOUT'
    assert again.get_option('max_wallclock_seconds') == 120 and again.is_finished_ok
    assert slurm_job(again.get_job_id())['TimeLimit'] == '00:02:00'
    assert any('ran out of walltime' in message for message in reports(node))
    assert results['output_arrays'].get_array('polarization').shape == (3,)
    print(f'walltime kill: {killed.exit_status} then finished with walltime 120 s; {time.monotonic() - began:.0f} s')
    record_fault('slurm_walltime_kill', {
        'what': 'a BN ABINIT job (test protocol) killed by SLURM at its 60 s walltime',
        'killed_exit_status': killed.exit_status, 'slurm_state': 'TIMEOUT', 'restarted_walltime_seconds': 120,
        'finished_ok': again.is_finished_ok, 'lost': 0 if again.is_finished_ok else 1,
        'seconds': round(time.monotonic() - began, 1)})
