"""`aiida-mlresponse campaign repair` on the embedded SQLite + ZeroMQ profile: the daemon's worker, circus and broker
killed with SIGKILL while CalcJobs run, their broker tasks lost; a plain `verdi daemon start` leaves them stuck, the
repair command re-queues them and every one finishes, none run twice."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from .conftest import kill_daemon

pytestmark = pytest.mark.slow

BIN = pathlib.Path(sys.executable).parent
SUBMIT = '''
from aiida import orm
from aiida.engine import submit
from aiida.plugins import CalculationFactory
code = orm.InstalledCode(label='bash', computer=orm.load_computer('localhost'), filepath_executable='/bin/bash').store()
print([submit(CalculationFactory('core.arithmetic.add'), code=code, x=orm.Int(i), y=orm.Int(100),
              metadata={'options': {'sleep': 10, 'resources': {'num_machines': 1}}}).pk for i in range(4)])
'''
REPORT = '''
import json
from aiida import orm
nodes = orm.QueryBuilder().append(orm.CalcJobNode).all(flat=True)
print(json.dumps([[n.pk, n.process_state.value if n.process_state else None, n.exit_status,
                   n.outputs.sum.value if 'sum' in n.outputs else None, n.get_job_id()] for n in nodes]))
'''


def run(env, *command, timeout=300):
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f'{command}: {done.stdout[-1500:]}\n{done.stderr[-1500:]}'
    return done.stdout


def calcjobs(env, tmp_path):
    (tmp_path / 'report.py').write_text(REPORT)
    return json.loads(run(env, BIN / 'verdi', 'run', tmp_path / 'report.py').strip().splitlines()[-1])


def wait_until(predicate, timeout, interval=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_repair_after_hard_kill_and_lost_tasks(tmp_path):
    env = dict(os.environ, AIIDA_PATH=str(tmp_path), PATH=f'{BIN}:{os.environ["PATH"]}')
    run(env, BIN / 'verdi', 'presto', '--profile-name', 'embedded', '--use-zeromq', '-n')
    run(env, BIN / 'verdi', 'config', 'set', 'daemon.timeout', '30')
    try:
        run(env, BIN / 'verdi', 'daemon', 'start', '1')
        (tmp_path / 'submit.py').write_text(SUBMIT)
        pks = json.loads(run(env, BIN / 'verdi', 'run', tmp_path / 'submit.py').strip().splitlines()[-1])
        assert wait_until(lambda: all(job_id for *_, job_id in calcjobs(env, tmp_path)), 120), 'jobs never started'

        # SIGKILL the whole daemon (circus, its worker, the broker), then lose the broker's tasks
        config = tmp_path / '.aiida'
        broker_dir = next((config / 'broker').iterdir())
        kill_daemon(config, 'embedded')
        for task in (broker_dir / 'storage' / 'tasks').glob('*/*.json'):
            task.unlink()

        # a plain restart: the processes have no task, nothing runs them
        run(env, BIN / 'verdi', 'daemon', 'start', '1')
        time.sleep(25)  # the jobs' 10 s of sleep are long over
        assert all(state == 'waiting' for _, state, *_ in calcjobs(env, tmp_path))

        began = time.monotonic()
        out = run(env, BIN / 'aiida-mlresponse', 'campaign', 'repair', '--watch', '180', '--stall-after', '30', timeout=400)
        print(out, f'repair to all finished: {time.monotonic() - began:.1f} s')
        assert 'inconsistencies with the broker repaired' in out and '0 process(es) still active' in out
        rows = calcjobs(env, tmp_path)
        assert sorted(pk for pk, *_ in rows) == sorted(pks)  # no CalcJob repeated
        assert all(state == 'finished' and status == 0 for _, state, status, *_ in rows), rows
        assert sorted(total for *_, total, _ in rows) == [100, 101, 102, 103]
    finally:
        subprocess.run([str(BIN / 'verdi'), 'daemon', 'stop'], env=env, capture_output=True, timeout=120)
