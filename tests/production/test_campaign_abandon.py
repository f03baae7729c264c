"""`aiida-mlresponse campaign abandon PK`: processes a dead `verdi run` left Waiting (no live runner, no broker
task) are marked killed; a process that a live runner answers for is left alone."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import ProcessState
from click.testing import CliRunner

from aiida_mlresponse.cli import cli

from .test_cli_bad_input import assert_one_line_error

BIN = pathlib.Path(sys.executable).parent


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(arg) for arg in args], **kwargs)


def waiting(node_class, caller=None, label='CALL'):
    node = node_class()
    if caller is not None:
        node.base.links.add_incoming(caller, LinkType.CALL_WORK if node_class is orm.WorkChainNode else LinkType.CALL_CALC, label)
    node.set_process_state(ProcessState.WAITING)
    node.set_process_label(node_class.__name__.replace('Node', ''))
    return node.store()


def test_abandon_marks_a_left_tree_killed(aiida_profile):
    """The state a SIGKILLed `verdi run` leaves: a work chain and its CalcJob Waiting (this profile has no broker,
    so no daemon can hold them)."""
    top = waiting(orm.WorkChainNode)
    child = waiting(orm.CalcJobNode, top)
    done = waiting(orm.CalcJobNode, top, 'done')
    done.set_process_state(ProcessState.FINISHED)
    done.set_exit_status(0)
    done.seal()

    refused = invoke('campaign', 'abandon', top.pk, input='n\n')
    assert refused.exit_code != 0 and 'Mark 2 process(es) killed' in refused.output
    assert top.process_state == ProcessState.WAITING  # nothing touched without a yes

    result = invoke('campaign', 'abandon', top.pk, input='y\n')
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith('killed')]
    assert len(lines) == 2 and f'WorkChain<{top.pk}> [was waiting]' in lines[0] and f'<{child.pk}>' in lines[1], result.output
    for node in (top, child):
        node = orm.load_node(node.pk)
        assert node.process_state == ProcessState.KILLED and node.is_sealed and node.checkpoint is None
        assert 'campaign abandon' in node.process_status and 'no live process' in node.exit_message
    assert orm.load_node(done.pk).process_state == ProcessState.FINISHED

    again = invoke('campaign', 'abandon', top.pk, '--force')
    assert_one_line_error(again, 'all terminated: nothing to abandon')


@pytest.mark.parametrize('value, message', [('999999', 'no node with pk 999999'), ('runs/x', 'is not a process pk or uuid')])
def test_abandon_bad_identifier(aiida_profile, value, message):
    assert_one_line_error(invoke('campaign', 'abandon', value, '--force'), message)


def test_abandon_refuses_a_data_node(aiida_profile):
    assert_one_line_error(invoke('campaign', 'abandon', orm.Int(1).store().pk, '--force'), 'not a process')


SLOW = '''
from aiida import orm
from aiida.engine import ToContext, WorkChain
from aiida.plugins import CalculationFactory


class Slow(WorkChain):
    """Launches a CalcJob that sleeps for minutes and waits on it."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.launch, cls.done)

    def launch(self):
        code = orm.InstalledCode(label='bash', computer=orm.load_computer('localhost'), filepath_executable='/bin/bash')
        node = self.submit(CalculationFactory('core.arithmetic.add'), code=code.store(), x=orm.Int(1), y=orm.Int(2),
                           metadata={'options': {'sleep': 600, 'resources': {'num_machines': 1}}})
        return ToContext(child=node)

    def done(self):
        pass
'''
RUN = '''
from aiida.engine import run
from slow_workchain import Slow
run(Slow)
'''
STATES = '''
from aiida import orm
for node in orm.QueryBuilder().append(orm.ProcessNode).all(flat=True):
    print(node.pk, node.process_label, node.process_state.value, node.get_job_id() if isinstance(node, orm.CalcJobNode) else '')
'''


@pytest.mark.slow
def test_abandon_after_a_sigkilled_verdi_run_on_the_embedded_profile(tmp_path):
    """A `verdi run` on an SQLite + ZeroMQ profile with its daemon running, SIGKILLed while its CalcJob waits:
    `campaign abandon` first leaves the tree alone while the run lives (it does not answer the embedded broker; aiida-core's
    record of the processes that have the profile open names it), then marks both killed."""
    env = dict(os.environ, AIIDA_PATH=str(tmp_path), PYTHONPATH=str(tmp_path), PATH=f'{BIN}:{os.environ["PATH"]}')

    def run(*command, check=True, **kwargs):
        done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=300, **kwargs)
        assert not check or done.returncode == 0, f'{command}: {done.stdout[-1500:]}\n{done.stderr[-1500:]}'
        return done

    (tmp_path / 'slow_workchain.py').write_text(SLOW)
    (tmp_path / 'run.py').write_text(RUN)
    (tmp_path / 'states.py').write_text(STATES)
    run(BIN / 'verdi', 'presto', '--profile-name', 'abandon', '--use-zeromq', '-n')
    run(BIN / 'verdi', 'daemon', 'start', '1')
    verdi_run = subprocess.Popen([str(BIN / 'verdi'), 'run', str(tmp_path / 'run.py')], env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = [line.split() for line in run(BIN / 'verdi', 'run', tmp_path / 'states.py').stdout.splitlines()]
            if any(len(row) == 4 and row[2] == 'waiting' for row in rows):  # the CalcJob's job is running
                break
            time.sleep(2)
        top, child = rows[0], [row for row in rows if len(row) == 4][0]
        assert top[1] == 'Slow' and top[2] == 'waiting' and child[2] == 'waiting', rows
        job = int(child[3])

        alive = run(BIN / 'aiida-mlresponse', 'campaign', 'abandon', top[0], '--force').stdout
        assert alive.count(f'pid {verdi_run.pid} (`') == 2 and 'may be running it' in alive and 'killed' not in alive, alive
        assert 'daemon' not in alive  # the daemon's worker and broker have the profile open too, and are not suspects

        verdi_run.send_signal(signal.SIGKILL)
        verdi_run.wait(timeout=30)
        out = run(BIN / 'aiida-mlresponse', 'campaign', 'abandon', top[0], '--force').stdout
        print(out)
        assert out.count('killed') == 2 and f'scheduler job {job} was not cancelled' in out, out
        rows = [line.split() for line in run(BIN / 'verdi', 'run', tmp_path / 'states.py').stdout.splitlines()]
        assert [row[2] for row in rows] == ['killed', 'killed'], rows
    finally:
        if verdi_run.poll() is None:
            verdi_run.kill()
        if job:  # the orphaned `sleep 600` job and its children
            import psutil

            try:
                for process in [psutil.Process(job), *psutil.Process(job).children(recursive=True)]:
                    process.kill()
            except psutil.NoSuchProcess:
                pass
        run(BIN / 'verdi', 'daemon', 'stop', check=False)
