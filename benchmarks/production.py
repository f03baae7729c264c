"""Load benchmark of the production stack (issue 13): N labelling CalcJobs submitted at once through the daemon.

    python benchmarks/production.py --stack embedded   --jobs 200   # SQLite + ZeroMQ, core.direct on localhost
    python benchmarks/production.py --stack production --jobs 200   # PostgreSQL + RabbitMQ, SLURM (needs root)
    python benchmarks/production.py --stack hyperqueue --jobs 200   # SQLite + ZeroMQ, HyperQueue task farm

`hyperqueue` needs the aiida-hyperqueue plugin, `hq` on PATH and a running HQ server with one worker holding the
node's CPUs (`hq server start & hq worker start &`): the embedded profile gets a `localhost-hq` computer on it.

Each stack gets a throw-away AiiDA config folder under --workdir (made with `aiida-mlresponse setup [--production
--slurm]`, removed afterwards with its database and broker user). N displaced BN cells (--protocol, default test) are submitted
as N `AbinitResponseCalculation`s in one go; the poller counts them until every one is terminated (or nothing has
moved for --stall seconds: those left are `stuck`). Then the same inputs (each CalcJob's `aiida.abi` and pseudo
folder) run again as bare ABINIT from a plain shell loop (`xargs -P`) with the same concurrency: all N at once on
core.direct (which starts every job it is given), the node's CPUs on SLURM and HyperQueue (one serial job per core). The ratio
campaign wall / bare wall is AiiDA's overhead. Results are merged into benchmarks/results/production.json under
`load.<stack>` (with --results; a small-N run from the tests writes nowhere else).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
RESULTS = REPO / 'benchmarks' / 'results' / 'production.json'
COMPUTERS = {'embedded': 'localhost', 'production': 'localhost-slurm', 'hyperqueue': 'localhost-hq'}
STACKS = {'embedded': 'SQLite + ZeroMQ (embedded), core.direct', 'production': 'PostgreSQL + RabbitMQ, core.slurm (one node)',
          'hyperqueue': 'SQLite + ZeroMQ (embedded), hyperqueue (one worker)'}


def run(command, env, timeout=1800) -> str:
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f'{command}: {done.stdout[-1500:]}\n{done.stderr[-1500:]}')
    return done.stdout


def merge_results(path: pathlib.Path, section: str, key: str, value: dict):
    """Put `value` at results[section][key], keeping everything else in the file."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault(section, {})[key] = value
    path.write_text(json.dumps(results, indent=1) + '\n')


# --- inside the profile (a child process with AIIDA_PATH set) ---

def campaign(profile: str, jobs: int, computer: str, stall: float, seed: int, protocol: str = 'test') -> dict:
    """Submit `jobs` ABINIT CalcJobs at once and poll them until all are terminated or nothing moves for `stall` s."""
    from aiida import load_profile, orm
    from aiida.engine import submit

    load_profile(profile, allow_switch=True)
    from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics.crystals import bn_cubic
    from aiida_mlresponse.workflows.label_rows import configuration_structures
    from aiida_mlresponse.workflows.labels import sample_displacement_configurations
    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

    code = orm.load_code(f'abinit@{computer}')
    reference = structure_from_arrays(*bn_cubic())
    configurations = sample_displacement_configurations(reference, orm.Float(0.01), orm.Int(jobs), orm.Int(seed))
    builders = [AbinitResponseBaseWorkChain.get_builder_from_protocol(code, structure, protocol=protocol).abinit
                for structure in configuration_structures('response', configurations, reference)]
    began = time.time()
    pks = [submit(AbinitResponseCalculation, **builder._inputs(prune=True)).pk for builder in builders]
    submitted = time.time()

    def states():
        query = orm.QueryBuilder().append(orm.CalcJobNode, filters={'id': {'in': pks}},
                                          project=['id', 'attributes.process_state', 'attributes.exit_status'])
        return {pk: (state, status) for pk, state, status in query.all()}

    terminal = ('finished', 'excepted', 'killed')
    last_change, done_count = time.time(), 0
    while True:
        rows = states()
        count = sum(state in terminal for state, _ in rows.values())
        if count != done_count:
            done_count, last_change = count, time.time()
        if count == len(pks) or time.time() - last_change > stall:
            break
        time.sleep(2)
    ended = time.time()
    nodes = [orm.load_node(pk) for pk in pks]
    job_ids = [node.get_job_id() for node in nodes if node.get_job_id()]
    all_calcjobs = orm.QueryBuilder().append(orm.CalcJobNode).count()
    return {
        'jobs': jobs, 'computer': computer, 'scheduler': code.computer.scheduler_type,
        'submit_seconds': round(submitted - began, 1), 'wall_seconds': round(ended - began, 1),
        'finished_ok': sum(state == 'finished' and status == 0 for state, status in rows.values()),
        'failed': sum(state == 'finished' and status != 0 for state, status in rows.values()),
        'excepted_or_killed': sum(state in ('excepted', 'killed') for state, _ in rows.values()),
        'stuck': sum(state not in terminal for state, _ in rows.values()),
        'lost': len(pks) - len(rows),
        # one CalcJob per submission and one scheduler job per CalcJob: nothing ran twice
        'calcjobs_in_profile': all_calcjobs, 'scheduler_jobs': len(job_ids), 'distinct_scheduler_jobs': len(set(job_ids)),
        'workdirs': [node.get_remote_workdir() for node in nodes if node.is_finished_ok],
    }


def add_hyperqueue_computer(profile: str):
    """`localhost-hq`: this machine through the HQ server (`hyperqueue` scheduler, `core.local` transport), with the
    localhost codes; mirrors `localhost-slurm` (aiida_mlresponse.cli.production)."""
    import tempfile

    from aiida import load_profile, orm

    load_profile(profile, allow_switch=True)
    from aiida_mlresponse.cli.setup import ensure_codes, find_executables

    computer = orm.Computer(label=COMPUTERS['hyperqueue'], hostname='localhost', description='this machine through HyperQueue',
                            transport_type='core.local', scheduler_type='hyperqueue',
                            workdir=tempfile.gettempdir() + '/aiida_hq').store()
    computer.configure(use_login_shell=False)  # `hq` and HQ_SERVER_DIR as the daemon has them: a login shell resets PATH
    computer.set_default_mpiprocs_per_machine(1)
    computer.set_minimum_job_poll_interval(2.0)  # `hq job list` is cheap
    ensure_codes(computer, find_executables())


# --- the driver ---

def make_profile(stack: str, root: pathlib.Path, jobs: int) -> tuple[str, dict]:
    env = dict(os.environ, AIIDA_PATH=str(root), PATH=f'{BIN}:{os.environ["PATH"]}')
    if stack in ('embedded', 'hyperqueue'):
        run([BIN / 'aiida-mlresponse', 'setup'], env)
        name = 'mlresponse'
        if stack == 'hyperqueue':
            run([sys.executable, __file__, 'computer', '--profile', name], env)
    else:
        name = f'bench-{secrets.token_hex(3)}'
        run([BIN / 'aiida-mlresponse', 'setup', '--production', '--slurm', '--profile-name', name], env)
    # one worker holds every CalcJob (200 slots by default would be just enough; leave room)
    run([BIN / 'verdi', '-p', name, 'config', 'set', 'daemon.worker_process_slots', str(jobs + 50)], env)
    run([BIN / 'verdi', '-p', name, 'config', 'set', 'daemon.timeout', '60'], env)
    return name, env


def daemon_cpu_seconds(config_dir: pathlib.Path, name: str) -> float:
    """CPU seconds used so far by the daemon's circus, its workers and (embedded) its ZeroMQ broker."""
    circus = int((config_dir / 'daemon' / f'circus-{name}.pid').read_text())
    children = subprocess.run(['pgrep', '-P', str(circus)], capture_output=True, text=True).stdout.split()
    pids = [circus, *map(int, children)]
    pids += [int(p.read_text().split()[-1]) for p in (config_dir / 'broker').glob('*/broker.pid')]
    total = 0
    for pid in set(pids):  # the broker is circus's child and has a pid file: count it once
        fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf('SC_CLK_TCK')


def drop_profile(stack: str, name: str, env: dict, root: pathlib.Path):
    subprocess.run([str(BIN / 'verdi'), '-p', name, 'daemon', 'stop'], env=env, capture_output=True, timeout=300)
    if stack == 'production':
        from aiida_mlresponse.cli import services

        credentials = json.loads((root / '.aiida' / 'mlresponse-production.json').read_text())[name]
        services.drop_database(credentials['database_name'], credentials['database_username'], services.start_postgres())
        services.drop_broker_user(credentials['broker_username'], credentials['broker_virtual_host'])
    shutil.rmtree(root, ignore_errors=True)


def copy_inputs(workdirs: list[str], target: pathlib.Path) -> list[str]:
    """Each CalcJob's ABINIT input and pseudo folder, copied into target/NNNN."""
    folders = []
    for index, workdir in enumerate(workdirs):
        folder = target / f'{index:04d}'
        folder.mkdir(parents=True)
        shutil.copy(pathlib.Path(workdir) / 'aiida.abi', folder)
        shutil.copytree(pathlib.Path(workdir) / 'pseudo', folder / 'pseudo')
        folders.append(str(folder))
    return folders


def bare_loop(folders: list[str], concurrency: int) -> dict:
    """The inputs run again as plain ABINIT from a shell loop; wall time and completed count."""
    abinit = shutil.which('abinit')
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.time()
    subprocess.run(['xargs', '-0', '-r', '-P', str(concurrency), '-n', '1', 'sh', '-c',
                    f'cd "$1" && "{abinit}" aiida.abi > aiida.log 2>&1', 'sh'],
                   input='\0'.join(folders), text=True, check=False)
    wall = time.time() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    completed = sum('Calculation completed' in (pathlib.Path(f) / 'aiida.abo').read_text(errors='replace')
                    for f in folders if (pathlib.Path(f) / 'aiida.abo').exists())
    return {'concurrency': concurrency, 'wall_seconds': round(wall, 1), 'completed': completed,
            'abinit_cpu_seconds_per_job': round(cpu / max(len(folders), 1), 2)}


def benchmark(stack: str, jobs: int, workdir: pathlib.Path, stall: float, seed: int, protocol: str = 'test') -> dict:
    root = workdir / f'{stack}-{jobs}-{secrets.token_hex(2)}'
    hq = {}
    if stack == 'hyperqueue':  # fail early without `hq` or its server; record which `hq` ran the jobs
        path = dict(os.environ, PATH=f'{BIN}:{os.environ["PATH"]}')
        run(['hq', 'job', 'list'], path)
        hq['hq'] = run(['hq', '--version'], path).strip()
    root.mkdir(parents=True)
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    name, env = make_profile(stack, root / 'config', jobs)
    try:
        run([BIN / 'verdi', '-p', name, 'daemon', 'start', '1'], env, timeout=300)
        out = run([sys.executable, __file__, 'campaign', '--profile', name, '--jobs', str(jobs),
                   '--computer', COMPUTERS[stack], '--stall', str(stall), '--seed', str(seed), '--protocol', protocol], env, timeout=24 * 3600)
        result = json.loads(out.strip().splitlines()[-1])
        result['daemon_cpu_seconds'] = round(daemon_cpu_seconds(root / 'config' / '.aiida', name), 1)
        # the work folders may live in the config folder (presto's localhost): copy the inputs out first
        folders = copy_inputs(result.pop('workdirs'), root / 'bare')
    finally:
        drop_profile(stack, name, env, root / 'config')
    bare = bare_loop(folders, jobs if stack == 'embedded' else (os.cpu_count() or 1))
    result['bare'] = bare
    result['throughput_jobs_per_minute'] = round(60 * result['finished_ok'] / result['wall_seconds'], 2)
    result['overhead_ratio'] = round(result['wall_seconds'] / bare['wall_seconds'], 2) if bare['completed'] else None
    result['daemon_cpu_seconds_per_job'] = round(result['daemon_cpu_seconds'] / jobs, 2)
    result['stack'] = STACKS[stack]
    result['protocol'] = protocol
    result.update(hq)
    result['cpus'] = os.cpu_count()
    result['load_average_before'], result['load_average_after'] = round(load_before, 2), round(os.getloadavg()[0], 2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('mode', nargs='?', default='benchmark', choices=['benchmark', 'campaign', 'computer'])
    parser.add_argument('--stack', choices=sorted(COMPUTERS), default='embedded')
    parser.add_argument('--jobs', type=int, default=200)
    parser.add_argument('--workdir', type=pathlib.Path, default=pathlib.Path('/tmp/mlresponse-production-benchmark'),
                        help='profiles, scratch and the bare runs go here (removed afterwards, but the bare runs)')
    parser.add_argument('--stall', type=float, default=900.0, help='seconds with no CalcJob terminating that count as stuck')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--protocol', default='test', help='ABINIT protocol of the N labels (results key `<stack>_<protocol>` unless test)')
    parser.add_argument('--results', type=pathlib.Path, help=f'merge the result into this JSON file (e.g. {RESULTS.relative_to(REPO)})')
    parser.add_argument('--profile', help=argparse.SUPPRESS)
    parser.add_argument('--computer', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == 'campaign':
        print(json.dumps(campaign(args.profile, args.jobs, args.computer, args.stall, args.seed, args.protocol)))
        return
    if args.mode == 'computer':
        add_hyperqueue_computer(args.profile)
        return
    result = benchmark(args.stack, args.jobs, args.workdir, args.stall, args.seed, args.protocol)
    print(f'{args.stack}: {result["finished_ok"]}/{args.jobs} finished ok, {result["failed"]} failed, '
          f'{result["excepted_or_killed"]} excepted/killed, {result["stuck"]} stuck, {result["lost"]} lost; '
          f'campaign {result["wall_seconds"]} s ({result["throughput_jobs_per_minute"]} jobs/min), '
          f'bare ABINIT x{result["bare"]["concurrency"]} {result["bare"]["wall_seconds"]} s: '
          f'overhead {result["overhead_ratio"]}; daemon CPU {result["daemon_cpu_seconds_per_job"]} s per job')
    print(json.dumps(result))
    if args.results:
        merge_results(args.results, 'load', args.stack if args.protocol == 'test' else f'{args.stack}_{args.protocol}', result)


if __name__ == '__main__':
    main()
