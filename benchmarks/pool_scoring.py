"""Seconds to score an active-learning pool with radnet committees: the path before pool scoring against now.

Per system (BN: the shared 16-atom cells; GaAs: 2 atoms), P and ε∞ committees fitted here with the package defaults
(`fit.fit_committee`) on the shared data (../shared/data/radnet, 800 configurations), then a pool as the campaigns
draw one: `size` copies of the data's mean configuration, every coordinate displaced by N(0, σ²), σ = 0.03 Å.
  - before: `scoring.predict_columns` per committee, and both at once (`scoring.predict_models`, what
    `al_steps.score_pool` runs) where the baseline has it, in a subprocess that imports the package as it was at
    the `--baseline` commit (`git archive`);
  - after: the same per committee, and both committees at once (one pass of cubes); the speedups compare the
    both-at-once paths where the baseline has one.
Wall and CPU seconds (time.process_time) of each, the load average around each, and the largest difference of the
new predictions from the old ones, relative to the largest |value| of each column. One torch thread (the machine
is shared with ABINIT runs, where torch's threads only wait on each other); since the pool's batches are scored on
threads of their own (`committee.pool_workers`, the process's CPUs), the CPU seconds can exceed the wall seconds.

Usage:  nice -n 5 .venv/bin/python benchmarks/pool_scoring.py [--size 10000] [--systems BN GaAs] [--baseline COMMIT]
Writes benchmarks/results/pool_scoring.json.
"""

from __future__ import annotations

import os

for _name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_name, '1')

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / 'shared' / 'data' / 'radnet'
RESULTS = ROOT / 'benchmarks' / 'results' / 'pool_scoring.json'
SYSTEMS = {'BN': 'BN_cubic.h5', 'GaAs': 'GaAs.h5'}
TARGETS = ('polarization', 'dielectric')
#: the commit before the pool's batches ran on threads and far pairs were cut (22f9818: before `committee.predict_pool`)
BASELINE = '52d8905'


def load_models(directory: pathlib.Path, system: str) -> list:
    from aiida_mlresponse.ml import checkpoint

    models = []
    for target in TARGETS:
        committee, payload = checkpoint.load(directory / f'{system}_{target}.pt')
        models.append(('radnet_committee', committee, payload['metadata']))
    return models


def timed(function) -> dict:
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return {'wall_s': time.perf_counter() - wall, 'cpu_s': time.process_time() - cpu,
            'load_average_before_after': [load, os.getloadavg()[0]]}, value


def score_each(models, pool) -> tuple[dict, dict]:
    """predict_columns per committee, as `al_steps.score_pool` calls it: (timings by target, predictions)."""
    from aiida_mlresponse.ml.scoring import predict_columns

    timings, predictions = {}, {}
    for (kind, committee, metadata), target in zip(models, TARGETS):
        timings[target], out = timed(lambda: predict_columns(kind, committee, metadata, {'positions': pool}))
        predictions.update(out)
    return timings, predictions


def worker(args):
    """The `before` measurement, run with the baseline package first on the path."""
    import aiida_mlresponse

    if not pathlib.Path(aiida_mlresponse.__file__).resolve().is_relative_to(pathlib.Path(args.package).resolve()):
        raise SystemExit(f'the baseline package was not imported: {aiida_mlresponse.__file__}')
    torch.set_num_threads(1)
    directory = pathlib.Path(args.work)
    pool = np.load(directory / f'{args.worker}_pool.npy')
    models = load_models(directory, args.worker)
    timings, predictions = score_each(models, pool)
    from aiida_mlresponse.ml import scoring

    if hasattr(scoring, 'predict_models'):  # a baseline that scores both committees at once: time that path too
        together = [timed(lambda: scoring.predict_models(models, {'positions': pool}))[0] for _ in range(args.repeats)]
        timings['together_least_wall_s'] = min(t['wall_s'] for t in together)
        timings['together_least_cpu_s'] = min(t['cpu_s'] for t in together)
    np.savez(directory / f'{args.worker}_before.npz', **{f'{k}__{i}': v for k, pair in predictions.items()
                                                          for i, v in enumerate(pair)})
    (directory / f'{args.worker}_before.json').write_text(json.dumps(timings))


def fit_models(system: str, directory: pathlib.Path) -> dict:
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.radnet.fit import fit_committee, model_metadata
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    data = load_radnet_h5(DATA / SYSTEMS[system])
    heads = {}
    for target in TARGETS:
        start = time.perf_counter()
        committee, _ = fit_committee(data.positions, data.cell, data.numbers, data.targets(target), target, log=None)
        metadata = model_metadata(committee, target, data.cell, data.numbers, len(data))
        checkpoint.save(directory / f'{system}_{target}.pt', committee, metadata=metadata)
        fit = committee.hyperparameters['fit']
        heads[target] = {'chosen_head': fit['chosen_head'], 'n_members': len(committee), 'cnn': fit['cnn'],
                         'central': committee.hyperparameters['central'], 'fit_seconds': time.perf_counter() - start}
    return heads


def run_system(system: str, args, directory: pathlib.Path) -> dict:
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5
    from aiida_mlresponse.ml.scoring import predict_models
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR
    from aiida_mlresponse.sampling.displacements import sample_displacements

    data = load_radnet_h5(DATA / SYSTEMS[system])
    out = {'atoms': len(data.numbers), 'pool': args.size, 'pool_sigma_angstrom': args.sigma,
           'committees': fit_models(system, directory)}
    pool = sample_displacements(data.positions.mean(axis=0) / ANGSTROM_TO_BOHR, args.sigma, args.size, 1)
    np.save(directory / f'{system}_pool.npy', pool)
    print(f'{system}: committees fitted ({out["committees"]}); scoring {args.size} cells', flush=True)

    package = directory / 'baseline'
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, '--worker', system, '--work', str(directory), '--package', str(package),
                    '--repeats', str(args.repeats)],
                   check=True, env=dict(os.environ, PYTHONPATH=str(package)))
    before = json.loads((directory / f'{system}_before.json').read_text())
    before['both_wall_s'] = sum(before[t]['wall_s'] for t in TARGETS)
    before['both_cpu_s'] = sum(before[t]['cpu_s'] for t in TARGETS)
    print(f'{system} before: {json.dumps(before)} ({time.perf_counter() - start:.0f} s with the imports)', flush=True)

    models = load_models(directory, system)
    after, _ = score_each(models, pool)
    after['both_separately_wall_s'] = sum(after[t]['wall_s'] for t in TARGETS)
    after['both_separately_cpu_s'] = sum(after[t]['cpu_s'] for t in TARGETS)
    together = []
    for _ in range(args.repeats):
        timing, predictions = timed(lambda: predict_models(models, {'positions': pool}))
        together.append(timing)
    after['together'] = together
    after['together_least_wall_s'] = min(t['wall_s'] for t in together)
    after['together_least_cpu_s'] = min(t['cpu_s'] for t in together)
    print(f'{system} after: {json.dumps(after)}', flush=True)

    old = np.load(directory / f'{system}_before.npz')
    difference = {}
    for column, (mean, spread) in predictions.items():
        for name, new, previous in (('mean', mean, old[f'{column}__0']), ('spread', spread, old[f'{column}__1'])):
            difference[f'{column}_{name}'] = float(np.abs(new - previous).max() / np.abs(previous).max())
    out.update(before=before, after=after, max_difference_relative_to_largest_value=difference,
               speedup_cpu=before.get('together_least_cpu_s', before['both_cpu_s']) / after['together_least_cpu_s'],
               speedup_wall=before.get('together_least_wall_s', before['both_wall_s']) / after['together_least_wall_s'])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=10000)
    parser.add_argument('--sigma', type=float, default=0.03, help='pool displacement σ (Å), as the campaigns')
    parser.add_argument('--systems', nargs='+', default=['BN', 'GaAs'], choices=sorted(SYSTEMS))
    parser.add_argument('--repeats', type=int, default=2, help='of the new path (both committees at once)')
    parser.add_argument('--baseline', default=BASELINE)
    parser.add_argument('--output', default=str(RESULTS))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--work', help=argparse.SUPPRESS)
    parser.add_argument('--package', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout
    result = {'description': __doc__.split('\n\n')[0], 'baseline_commit': args.baseline, 'commit': commit.strip(),
              'machine': {'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
                          'note': 'shared with running ABINIT campaigns: see the load averages'},
              'units': {'seconds': 's', 'cpu_s': 'time.process_time of the scoring process'}, 'systems': {}}
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        (directory / 'baseline').mkdir()
        archive = subprocess.run(['git', 'archive', args.baseline, 'aiida_mlresponse'], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', str(directory / 'baseline')], input=archive, check=True)
        for system in args.systems:
            result['systems'][system] = run_system(system, args, directory)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1))
    for system, entry in result['systems'].items():
        before = entry['before']
        print(f"{system} ({entry['atoms']} atoms), {entry['pool']} cells, P + ε∞: before "
              f"{before.get('together_least_wall_s', before['both_wall_s']):.1f} s wall / "
              f"{before.get('together_least_cpu_s', before['both_cpu_s']):.1f} s CPU, after {entry['after']['together_least_wall_s']:.1f} s "
              f"wall / {entry['after']['together_least_cpu_s']:.1f} s CPU; largest relative difference "
              f"{max(entry['max_difference_relative_to_largest_value'].values()):.1e}")
    print(f'written to {args.output}')


if __name__ == '__main__':
    main()
