"""An active-learning campaign driven by the daemon of an embedded SQLite + ZeroMQ profile, interrupted and resumed.

- the daemon stopped while round 2's ABINIT runs and started again: the campaign finishes, every pick is labelled
  and no ABINIT run is repeated (one CalcJob per label);
- the campaign killed in round 2 (`verdi process kill`, daemon stopped) and launched again from scratch with caching
  on (`workflows.campaigns.enable_caching`): every ABINIT run the killed one finished is reused, only the rest run.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

BIN = pathlib.Path(sys.executable).parent
ABINIT = 'aiida.calculations:mlresponse.abinit.response'
# A tiny BN campaign at the test protocol (as tests/workflows/test_active_learning.py): 4 initial labels, 2 picks per
# round, 2 labelling rounds; argv: initial seed, pool seed, ABINIT jobs at once.
SUBMIT = '''
import json, sys
from aiida import orm
from aiida.engine import submit
from aiida_mlresponse.data import structure_from_arrays
from aiida_mlresponse.physics.crystals import bn_cubic
from aiida_mlresponse.workflows.active_learning import ActiveLearningWorkChain
from aiida_mlresponse.workflows.labels import sample_displacement_configurations

seed, concurrent = int(sys.argv[1]), int(sys.argv[2])
reference = structure_from_arrays(*bn_cubic())
builder = ActiveLearningWorkChain.get_builder()
builder.labelling.code = orm.load_code('abinit@localhost')
builder.labelling.reference = reference
builder.labelling.protocol = orm.Str('test')
builder.labelling.max_concurrent = orm.Int(concurrent)
builder.model_kind = orm.Str('radnet')
builder.targets = orm.List(['dielectric'])
builder.hyperparameters = orm.Dict({'n_members': 2, 'seed': 1, 'training': {'epochs': 2, 'log_every': 1}})
builder.training_code = orm.load_code('mlresponse-python@localhost')
builder.initial = sample_displacement_configurations(reference, orm.Float(0.01), orm.Int(4), orm.Int(seed))
builder.pool = sample_displacement_configurations(reference, orm.Float(0.03), orm.Int(40), orm.Int(seed + 1))
builder.batch_size, builder.max_rounds = orm.Int(2), orm.Int(2)
builder.trust = orm.Dict({'lo': 1e-9, 'hi': 1e9})
print(json.dumps(submit(builder).pk))
'''
# The campaign's state and, per labelling work chain in order, its ABINIT CalcJobs: [pk, state, exit status, job id,
# uuid of the node it was cached from, uuid]; argv: pk, a condition on that state `s`, seconds. It polls every second
# in one process (a `verdi run` per poll would miss an ABINIT run of a few seconds) until the condition holds.
WAIT = '''
import json, sys, time
from aiida import orm
from aiida.manage import get_manager

def state(node):
    labelling = sorted((n for n in node.called if n.process_label == 'LabelsWorkChain'), key=lambda n: n.ctime)
    calcs = lambda n: sorted((c for c in n.called_descendants if c.process_type == '%s'), key=lambda c: c.ctime)
    return {
        'state': node.process_state.value, 'exit_status': node.exit_status,
        'labelling': [[[c.pk, getattr(c.process_state, 'value', 'created'), c.exit_status, c.get_job_id(), c.base.extras.get('_aiida_cached_from', None),
                        c.uuid] for c in calcs(n)] for n in labelling],
        'trainings_cached': [bool(n.base.extras.get('_aiida_cached_from', None))
                             for n in sorted(node.called, key=lambda n: n.ctime) if n.process_label == 'TrainingCalculation'],
        'restart_chains': len([n for n in node.called_descendants if n.process_label == 'AbinitResponseBaseWorkChain']),
        'picks': [[p['configuration_index'] for p in n.outputs.decisions['picks']]
                  for n in sorted(node.called, key=lambda n: n.ctime) if n.process_label == 'score_pool' and n.is_finished_ok],
        'dataset': node.outputs.dataset.get_array('configuration_index').tolist() if 'dataset' in node.outputs else None,
    }

condition = eval('lambda s: ' + sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
while True:
    s = state(orm.load_node(int(sys.argv[1])))
    if condition(s) or time.monotonic() > deadline:
        break
    get_manager().reset_profile_storage()  # a fresh session: the next poll reads what the daemon wrote since
    time.sleep(1)
print(json.dumps({**s, 'condition': condition(s)}))
''' % ABINIT
# Round 2's labelling (the third labelling work chain) has `done` finished ABINIT runs and one with a job running.
ROUND_TWO_RUNNING = ("len(s['labelling']) >= 3 and sum(c[1] == 'finished' for c in s['labelling'][2]) >= {done} "
                     "and any(c[3] and c[1] == 'waiting' for c in s['labelling'][2])")
FINISHED = "s['state'] in ('finished', 'excepted', 'killed')"
SETUP = '''
from aiida import orm
computer = orm.load_computer('localhost')
computer.set_minimum_job_poll_interval(1.0)  # the default 10 s poll would dominate these short ABINIT runs
'''
CACHING = '''
import json
from aiida_mlresponse.workflows.campaigns import enable_caching
print(json.dumps(enable_caching()))
'''


class Embedded:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.env = dict(os.environ, AIIDA_PATH=str(root), PATH=f'{BIN}:{os.environ["PATH"]}')

    def run(self, *command, timeout=600):
        done = subprocess.run([str(c) for c in command], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f'{command}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}'
        return done.stdout

    def verdi(self, *args, **kwargs):
        return self.run(BIN / 'verdi', *args, **kwargs)

    def script(self, text, *args, timeout=600):
        path = self.root / f'script_{abs(hash(text))}.py'
        path.write_text(text)
        return json.loads(self.verdi('run', path, *args, timeout=timeout).strip().splitlines()[-1])

    def wait(self, pk, condition, timeout=600):
        state = self.script(WAIT, pk, condition, timeout, timeout=timeout + 300)
        assert state['condition'], f'timed out after {timeout} s: {state}'
        return state


@pytest.fixture(scope='module')
def embedded(tmp_path_factory):
    """`aiida-mlresponse setup` (verdi presto: SQLite + ZeroMQ, codes, pseudos) in a throw-away AIIDA_PATH."""
    root = tmp_path_factory.mktemp('aiida_embedded')
    profile = Embedded(root)
    try:
        began = time.monotonic()
        profile.run(BIN / 'aiida-mlresponse', 'setup')
        profile.verdi('config', 'set', 'daemon.timeout', '30')
        (root / 'setup.py').write_text(SETUP)
        profile.verdi('run', root / 'setup.py')
        print(f'profile set up in {time.monotonic() - began:.1f} s')
        yield profile
    finally:
        subprocess.run([str(BIN / 'verdi'), 'daemon', 'stop'], env=profile.env, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_daemon_stopped_in_round_two_then_resumed_repeats_no_abinit_run(embedded):
    began = time.monotonic()
    try:
        embedded.verdi('daemon', 'start', '1')
        pk = embedded.script(SUBMIT, 1, 2)
        embedded.wait(pk, ROUND_TWO_RUNNING.format(done=0))
        embedded.verdi('daemon', 'stop')
        stopped = embedded.wait(pk, 'True', 0)
        # the campaign is stopped in round 2 (its ABINIT jobs, detached from the daemon, may finish meanwhile)
        assert stopped['state'] == 'waiting' and len(stopped['labelling']) == 3 and not stopped['dataset'], stopped
        print(f"daemon stopped; round 2's ABINIT runs then: {[c[1] for c in stopped['labelling'][2]]}")
        embedded.verdi('daemon', 'start', '1')
        state = embedded.wait(pk, FINISHED)
    finally:
        embedded.verdi('daemon', 'stop')
    print(f'interrupted and resumed campaign: {time.monotonic() - began:.1f} s; {state}')
    assert state['state'] == 'finished' and state['exit_status'] == 0, state
    labelled = [index for picks in state['picks'][:2] for index in picks]  # round 3 only trains, scores and stops
    assert len(state['picks']) == 3 and len(labelled) == 4 and set(labelled) <= set(state['dataset']) and len(state['dataset']) == 8
    calcs = [c for chain in state['labelling'] for c in chain]
    # one ABINIT CalcJob per label run (the reference and 8 configurations), each finished: none repeated
    assert len(calcs) == state['restart_chains'] == 1 + len(state['dataset']), state
    assert all(c[1] == 'finished' and c[2] == 0 for c in calcs), calcs


def test_killed_campaign_launched_again_with_caching_reuses_every_finished_abinit_run(embedded):
    began = time.monotonic()
    try:
        embedded.verdi('daemon', 'start', '1')
        # one ABINIT job at a time: round 2 is killed with one pick labelled and the other one running
        killed_pk = embedded.script(SUBMIT, 3, 1)
        embedded.wait(killed_pk, ROUND_TWO_RUNNING.format(done=1))
        embedded.verdi('process', 'kill', '-t', '120', killed_pk, timeout=300)
        embedded.verdi('daemon', 'stop')
        killed = embedded.wait(killed_pk, 'True', 0)
        assert killed['state'] == 'killed', killed
        assert ABINIT in embedded.script(CACHING)  # read by the daemon when it starts
        embedded.verdi('daemon', 'start', '1')
        pk = embedded.script(SUBMIT, 3, 1)
        state = embedded.wait(pk, FINISHED)
    finally:
        embedded.verdi('daemon', 'stop')
    print(f'killed campaign, launched again: {time.monotonic() - began:.1f} s; killed {killed}; again {state}')
    assert state['state'] == 'finished' and state['exit_status'] == 0, state
    assert set(state['picks'][0] + state['picks'][1]) <= set(state['dataset']) and len(state['dataset']) == 8
    # the killed campaign's two trainings are reused too (the same labels), so the picks are the same
    assert state['trainings_cached'] == [True, True, False] and state['picks'][:2] == killed['picks'][:2], state
    done_before = {c[5] for chain in killed['labelling'] for c in chain if c[1] == 'finished' and c[2] == 0}
    # reference, initial, round 1, round 2's first pick; its second too when the kill (a few seconds of `verdi`) came
    # after that job's end
    assert len(done_before) in (1 + 4 + 2 + 1, 1 + 4 + 2 + 2), killed
    print(f'ABINIT runs finished before the kill: {len(done_before)} of 9')
    calcs = [c for chain in state['labelling'] for c in chain]
    cached = [c for c in calcs if c[4]]
    ran = [c for c in calcs if not c[4]]
    # every run finished before the kill is reused (one finishing between the snapshot and the stop may be too); the
    # cache source may be any finished run with the same hash (the first test's reference run is one), so the runs are
    # matched by place: the same labelling work chain, the same configuration, one ABINIT job at a time
    for chain_killed, chain_again in zip(killed['labelling'], state['labelling']):
        for before, again in zip(chain_killed, chain_again):
            if before[1] == 'finished' and before[2] == 0:
                assert again[4], (before, again)
    assert len(calcs) == 1 + len(state['dataset']) and len(ran) == len(calcs) - len(cached), calcs  # none twice
