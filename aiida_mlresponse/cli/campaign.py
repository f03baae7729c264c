"""`aiida-mlresponse campaign repair`: get a daemon-driven campaign moving again after a hard crash; `campaign
abandon`: mark killed the processes a dead `verdi run` left behind, which nothing can kill or continue.

After the daemon's worker, circus and broker are killed (SIGKILL, out-of-memory, a reboot) two things were seen
with aiida-core 2.9 (issue 13): processes left with no task in the broker (nothing will ever run them again), and,
on the embedded ZeroMQ broker, tasks left pending that no worker picks up until a second daemon restart. This
command does what fixes both by hand: stop the daemon, `verdi process repair` (re-queue processes that have no
task, drop tasks of finished ones), start the daemon, then watch the broker and restart the daemon once more when
tasks stay pending while none is being processed. Launch scripts can run it before they submit.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import click

from . import cli


def _verdi(profile: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    verdi = pathlib.Path(sys.executable).parent / 'verdi'
    return subprocess.run([str(verdi), '-p', profile, *args], capture_output=True, text=True, timeout=timeout)


def active_processes() -> list[int]:
    from aiida.engine.processes.control import get_active_processes

    return sorted(get_active_processes(project='id'))


def broker_queue(broker) -> tuple[int, int] | None:
    """(pending, processing) task counts of an embedded ZeroMQ broker (its queue is files); None for others."""
    from aiida.brokers.zeromq.broker import ZeromqBroker

    if not isinstance(broker, ZeromqBroker):
        return None
    tasks = broker._storage_path / 'tasks'
    return tuple(len(list((tasks / state).glob('*.json'))) for state in ('pending', 'processing'))


def watch(profile: str, broker, seconds: float, stall_after: float, echo=click.echo, interval: float = 2.0) -> int:
    """Until no process is active (or `seconds` pass): restart the daemon whenever the broker has held pending
    tasks with none processing for `stall_after` seconds. Returns the number of restarts."""
    restarts, stalled_since = 0, None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and active_processes():
        queue = broker_queue(broker)
        if queue is not None and queue[0] > 0 and queue[1] == 0:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > stall_after:
                echo(f'daemon    stalled: {queue[0]} tasks pending, none processing for {stall_after:.0f} s: restarting')
                _verdi(profile, 'daemon', 'restart')
                restarts, stalled_since = restarts + 1, None
        else:
            stalled_since = None
        time.sleep(interval)
    return restarts


@cli.group()
def campaign():
    """Keep daemon-driven campaigns moving."""


@campaign.command('repair')
@click.option('--workers', default=1, show_default=True, help='Daemon workers to start.')
@click.option('--watch', 'watch_seconds', default=0.0, show_default=True,
              help='Then watch for up to this many seconds (until no process is active) and restart a stalled daemon.')
@click.option('--stall-after', default=60.0, show_default=True,
              help='Seconds with tasks pending and none processing that count as a stall.')
def campaign_repair(workers, watch_seconds, stall_after):
    """Re-queue processes that lost their task, restart the daemon, and optionally watch it for a stall.

    On PostgreSQL it also ends database connections that no live AiiDA process owns (as `verdi process repair
    --force` does): close notebooks and shells on this profile first."""
    from aiida import load_profile
    from aiida.manage import get_manager

    profile = load_profile().name
    broker = get_manager().get_broker()
    if broker is None:
        raise click.ClickException(f'profile {profile} has no broker: processes run only with `verdi run`, nothing to repair.')
    _verdi(profile, 'daemon', 'stop')
    before = active_processes()
    # `verdi process repair --force` terminates PostgreSQL connections no live AiiDA process owns (the killed
    # worker's, which may hold locks): ours must not be open then.
    get_manager().reset_profile_storage()
    done = _verdi(profile, 'process', 'repair', '--force')
    if done.returncode != 0:
        raise click.ClickException(f'`verdi process repair` failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}')
    fixed = 'Attempting to fix inconsistencies' in done.stdout + done.stderr
    click.echo(f'processes {len(before)} active; {"inconsistencies with the broker repaired" if fixed else "all had a task"}')
    started = _verdi(profile, 'daemon', 'start', str(workers))
    if started.returncode != 0:
        raise click.ClickException(f'`verdi daemon start` failed: {(started.stderr or started.stdout).strip()[-300:]}')
    click.echo(f'daemon    started with {workers} worker(s)')
    if watch_seconds > 0:
        restarts = watch(profile, broker, watch_seconds, stall_after)
        left = active_processes()
        click.echo(f'watched   {restarts} stall restart(s); {len(left)} process(es) still active')
    for pk, label in broker_casualties():
        click.echo(f'excepted  {label}<{pk}> lost its broker connection (RabbitMQ restarted under it): resume it with '
                   f'`aiida-mlresponse campaign rerun {pk}` (finished ABINIT runs are reused, none repeated)')


# An exception from the broker client inside a process: a RabbitMQ restart under a running worker can close the
# worker's channel while a process (un)subscribes to broadcasts (kiwipy ChannelInvalidStateError); aiida-core 2.9
# then excepts the process, which cannot be continued, only run again.
BROKER_ERRORS = ('ChannelInvalidStateError', 'ChannelClosed', 'ConnectionClosed', 'AMQPConnectionError', 'aiormq')


def broker_casualties() -> list[tuple[int, str]]:
    """(pk, process label) of top-level excepted processes whose exception came from the broker client and that no
    `campaign rerun` has run again yet."""
    from aiida import orm

    query = orm.QueryBuilder().append(orm.ProcessNode, filters={'attributes.process_state': 'excepted'},
                                      project=['id', 'attributes.process_label', 'attributes.exception', 'extras'])
    found = []
    for pk, label, exception, extras in query.all():
        node = orm.load_node(pk)
        if node.caller is None and any(error in (exception or '') for error in BROKER_ERRORS) and 'rerun_pk' not in extras:
            found.append((pk, label))
    return found


@campaign.command('rerun')
@click.argument('identifier')
@click.option('--wait', is_flag=True, help='Wait until the new process is terminated and print its state.')
def campaign_rerun(identifier, wait):
    """Run the excepted (or killed) process IDENTIFIER again with the same inputs, reusing its finished ABINIT runs.

    Caching of the package's CalcJobs is turned on for the profile (and the daemon restarted to see it), and the
    runs IDENTIFIER left going are waited for first, so that each of them is reused rather than run twice."""
    from aiida import orm
    from aiida.engine import submit

    from aiida_mlresponse.workflows.campaigns import enable_caching

    from .arguments import load_node

    node = load_node(identifier, orm.ProcessNode, 'process')
    if node.process_state is None or node.process_state.value not in ('excepted', 'killed'):
        raise click.ClickException(f'{node.process_label}<{node.pk}> is {node.process_state.value if node.process_state else "not started"}: '
                                   'only an excepted or killed process is run again.')
    deadline = time.monotonic() + 3600
    while [n for n in node.called_descendants if not n.is_terminated] and time.monotonic() < deadline:
        time.sleep(5)  # its CalcJobs still running: wait, then reuse them from the cache
    from aiida.manage import get_manager

    profile = get_manager().get_profile().name
    if enable_caching():
        _verdi(profile, 'daemon', 'restart')
        click.echo(f'caching   turned on for the package\'s CalcJobs on profile {profile}; daemon restarted')
    new = submit(node.get_builder_restart())
    node.base.extras.set('rerun_pk', new.pk)
    click.echo(f'submitted {new.process_label}<{new.pk}>: {node.process_label}<{node.pk}> run again')
    if wait:
        while not new.is_terminated:
            time.sleep(3)
        click.echo(f'finished  {new.process_label}<{new.pk}> [{new.process_state.value}] exit status {new.exit_status}')


ABANDONED = 'Abandoned by `aiida-mlresponse campaign abandon`: no live process ran it (its `verdi run` or worker died)'


def broker_task_pks(broker) -> set[int]:
    """pks of processes with a task in the broker: queued, or (embedded broker) taken by a worker. The daemon
    runs these; RabbitMQ hides tasks a worker holds, but a live worker answers for them (`answers`)."""
    from aiida.brokers.zeromq.broker import ZeromqBroker, ZeromqIncomingTask
    from aiida.engine.processes.control import get_process_tasks

    pks = set(get_process_tasks(broker))
    tasks = getattr(broker, '_storage_path', None)
    if isinstance(broker, ZeromqBroker) and (tasks / 'tasks').exists():
        from aiida.brokers.zeromq.queue import PersistentQueue

        queue = PersistentQueue(tasks / 'tasks')
        pks |= {(ZeromqIncomingTask(*task, queue).body or {}).get('args', {}).get('pid') for task in queue.get_all_processing()}
    return pks


def answers(controller, pk: int, timeout: float = 5.0) -> bool | None:
    """Whether a live runner (daemon worker or `verdi run`) answers for process `pk`: True; False when the broker
    knows no such recipient (`verdi process kill`'s "Recipient not found"); None when nothing came back in time."""
    import concurrent.futures

    from kiwipy.communications import UnroutableError
    from plumpy.futures import unwrap_kiwi_future

    try:
        unwrap_kiwi_future(controller.get_status(pk)).result(timeout=timeout)
    except UnroutableError:
        return False
    except concurrent.futures.TimeoutError:
        return None
    except Exception as exc:  # the embedded broker answers an unknown recipient with a plain exception
        return False if 'Recipient not found' in str(exc) else None
    return True


def other_profile_users() -> list[str]:
    """'pid N (`command`)' of the live processes, other than this one and the daemon's own, that have this
    profile's storage open: aiida-core records each in its access directory (`ProfileAccessManager`). A `verdi run`
    does not answer the embedded broker, so this is how a live one is seen."""
    import os

    import psutil
    from aiida.manage import get_manager
    from aiida.manage.configuration.settings import AiiDAConfigPathResolver

    users = []
    for record in (AiiDAConfigPathResolver().access_control_dir / get_manager().get_profile().name).glob('*.pid'):
        try:
            process = psutil.Process(int(record.stem))
            command = process.cmdline()
        except (ValueError, psutil.Error):
            continue  # gone: a stale record
        daemon = any(command[i:i + 2] in (['daemon', 'worker'], ['daemon', 'broker']) for i in range(len(command)))
        if process.pid != os.getpid() and record.read_text() == str(command) and not daemon:
            users.append(f'pid {process.pid} (`{" ".join(command)[:80]}`)')
    return users


def abandon_check():
    """A function pk -> None (nothing live runs it) or why the process is left alone."""
    from aiida.engine.daemon.client import get_daemon_client
    from aiida.manage import get_manager

    users = other_profile_users()
    if users:
        return lambda pk: f'{", ".join(users)} has this profile open and may be running it: stop it first'
    broker = get_manager().get_broker()
    from aiida.brokers.zeromq.broker import ZeromqBroker

    if broker is None or (isinstance(broker, ZeromqBroker) and not get_daemon_client().is_daemon_running):
        return lambda pk: None  # no daemon, and no other process on the profile: nothing runs it
    tasks = broker_task_pks(broker)
    controller = get_manager().get_process_controller()
    reasons = {True: 'a live process answers for it', None: 'no answer from the broker in time: it may be alive'}

    def why_not(pk):
        if pk in tasks:
            return 'it has a broker task: the daemon runs it (`verdi process kill` it)'
        return reasons.get(answers(controller, pk))

    return why_not


@campaign.command('abandon')
@click.argument('identifier')
@click.option('-f', '--force', is_flag=True, help='Do not ask for confirmation.')
def campaign_abandon(identifier, force):
    """Mark killed the process IDENTIFIER and its descendants that are not terminated and that nothing runs.

    For processes left Waiting or Running by a `verdi run` that died: no daemon holds them, so `verdi process kill`
    answers "Recipient not found". Left alone: every process while another live process (a `verdi run`, a shell)
    has the profile open, and a process with a broker task or one a daemon worker answers for."""
    from aiida import orm
    from aiida.engine import ProcessState

    from .arguments import load_node

    node = load_node(identifier, orm.ProcessNode, 'process')
    candidates = [n for n in [node, *node.called_descendants] if not n.is_terminated]
    if not candidates:
        raise click.ClickException(f'{node.process_label}<{node.pk}> and its descendants are all terminated: nothing to abandon.')
    why_not = abandon_check()
    chosen = []
    for process in sorted(candidates, key=lambda n: n.pk):
        reason = why_not(process.pk)
        state = process.process_state.value if process.process_state else 'created'
        if reason:
            click.echo(f'left      {process.process_label}<{process.pk}> [{state}]: {reason}')
        else:
            chosen.append((process, state))
    if not chosen:
        return
    if not force:
        click.confirm(f'Mark {len(chosen)} process(es) killed: {", ".join(f"{n.process_label}<{n.pk}>" for n, _ in chosen)}?',
                      abort=True)
    for process, state in chosen:
        process.set_process_state(ProcessState.KILLED)
        process.set_process_status(ABANDONED)
        process.set_exit_message(ABANDONED)
        process.delete_checkpoint()  # nothing may continue it
        process.seal()
        job = process.get_job_id() if isinstance(process, orm.CalcJobNode) else None
        click.echo(f'killed    {process.process_label}<{process.pk}> [was {state}]: no live process ran it'
                   + (f'; its scheduler job {job} was not cancelled' if job else ''))


@campaign.command('show')
@click.argument('identifier')
def campaign_show(identifier):
    """The round table of the active-learning campaign IDENTIFIER (pk or uuid), finished or running."""
    from aiida import orm

    from aiida_mlresponse.workflows.provenance import campaign_rounds

    from .arguments import load_node

    node = load_node(identifier, orm.WorkflowNode, 'work chain')
    if node.process_label != 'ActiveLearningWorkChain':
        raise click.ClickException(f'node {identifier} is a {node.process_label}, not an ActiveLearningWorkChain.')
    rows = campaign_rounds(node)
    click.echo(f'{node.process_label}<{node.pk}> {node.label or ""} [{node.process_state.value}]'
               + (f': {node.outputs.stop_reason.value}' if 'stop_reason' in node.outputs else ''))
    head = f'{"round":>5} {"labels":>6} {"<lo":>6} {"picked":>6} {"reject":>6} {"train s":>8} {"score s":>8} {"DFT s":>8} {"wall s":>8} {"ovh":>5}  test MAE / max'
    click.echo(head)
    for row in rows:
        errors = '; '.join(f'{c} {e["mae"]:.3g} / {e["max"]:.3g}' for c, e in row.get('test_errors', {}).items() if isinstance(e, dict))
        click.echo(f'{row["round"]:>5} {row["labels"]:>6} {row["fraction_below_lo"]:>6.3f} {row["picked"]:>6} {row["rejected"]:>6} '
                   f'{row.get("training_seconds", 0):>8.1f} {row.get("scoring_seconds", 0):>8.1f} {row.get("dft_seconds", 0):>8.1f} '
                   f'{row["wall_seconds"]:>8.1f} {row["overhead_fraction"]:>5.2f}  {errors}')


@campaign.command('why')
@click.argument('dataset')
@click.argument('index', type=int)
def campaign_why(dataset, index):
    """Why the configuration INDEX (its `configuration_index`) of DATASET was labelled."""
    from aiida_mlresponse.data.dataset import DatasetData
    from aiida_mlresponse.workflows.provenance import why_labelled

    from .arguments import load_node

    node = load_node(dataset, DatasetData, 'DatasetData')
    try:
        answer = why_labelled(node, index)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for key, value in answer.items():
        click.echo(f'{key:>20}: {value}')
