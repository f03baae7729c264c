"""Active learning against random sampling for radnet, and whether the committee's spread means something.

Data: the shared radnet configurations (../shared/data/radnet: GaAs and BN, 800 each, with P and ε∞ computed
once by the paper's authors), used as a pool with pre-computed labels. A label is read only after its row is
picked. Committees are fitted by `ml.radnet.fit.fit_committee` (what `TrainingCalculation` runs), predicted by
`ml.scoring.predict_columns` (what the work chain scores with), and every pick is `sampling.acquisition.plan_round`.

Part ``spread``: per system and target, the configurations with the largest displacements (100, translation
removed) are the "wide" test, 150 of the rest the held-out test, 550 the training set. The committee is fitted
twice on the same rows: with the hyperparameters of before (3 members on 80 % splits, CNNs, no calibration) and
with the package defaults; reported: test MAE, fraction of component errors within 2 σ, Spearman of spread
against error over all (configuration, component) pairs and per configuration (largest of each), fit time;
"box" pools the test and the wide rows. ``spearman_ceiling``: what an exact σ could reach on those errors, from their
kurtosis (`spearman_ceiling`): a spread cannot rank errors whose scale does not vary.

Part ``speed``: seconds to score 10,000 displaced cells (P and ε∞ committees, `predict_columns`, least of two
passes) with the committees of before and of now, the round's scoring of now (both committees at once,
`predict_models`, as `al_steps.score_pool`; the issue's goal: at most 5 s) and the density cubes alone.

Part ``al``: per system, a test set covering the whole box uniformly in displacement size (10 equal-width bins of
the displacement norm, up to 20 per bin: the tails are over-represented against the Gaussian sampling), the rest
is the pool. Both arms start from the same random `initial` labels and add `batch` per round up to `budget`:
random picks, or `plan_round` on the committees' (P and ε∞, relative spread) scores. Test MAE and max per round,
and the labels each arm needs to reach random's final MAE and max.

Usage:  nice -n 10 .venv/bin/python benchmarks/active_learning.py [--part spread speed al] [--systems GaAs BN]
(all parts, both systems: ~25 min here, most of it the CNN committees of before).
A pool of the package's own labels instead of the shared data (e.g. BN at the `test` protocol, displacements of
several widths: `workchains/run_bn_labels.py ... --daemon`, then `aiida-mlresponse dataset export`):
        ... --part al --systems BN --pool bn_*.npz --test-max-fraction 0.5 --key-suffix test_protocol_pool
Writes benchmarks/results/active_learning.json (each part merged into it) and prints the tables.
"""

from __future__ import annotations

import os

# One BLAS thread: on this shared 2-core machine threaded OpenBLAS made the closed-form head fits ~14x slower.
for _name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_name, '1')

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiida_mlresponse.data.schema import read_npz  # noqa: E402
from aiida_mlresponse.ml.common import tensor_to_voigt  # noqa: E402
from aiida_mlresponse.ml.radnet.fit import fit_committee, model_metadata  # noqa: E402
from aiida_mlresponse.ml.radnet.hdf5 import RadnetDataset, load_radnet_h5  # noqa: E402
from aiida_mlresponse.ml.scoring import errors_against_labels, predict_columns, predict_models  # noqa: E402
from aiida_mlresponse.physics.polarization import fix_branch  # noqa: E402
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR  # noqa: E402
from aiida_mlresponse.sampling import acquisition as acq  # noqa: E402

DATA = ROOT.parent / 'shared' / 'data' / 'radnet'
RESULTS = ROOT / 'benchmarks' / 'results' / 'active_learning.json'
SYSTEMS = {'GaAs': 'GaAs.h5', 'BN': 'BN_cubic.h5'}
COLUMNS = {'polarization': 'polarization', 'dielectric': 'dielectric_tensor'}
#: the committee of before this benchmark (package defaults until 2026-11-30)
BEFORE = {'n_members': 3, 'resampling': 'split', 'cnn': True, 'coverage': None, 'head': {'shared_projection': False}}


def machine() -> dict:
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               'unknown')
    return {'cpu': cpu, 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
            'python': platform.python_version(), 'load_average_at_end': list(os.getloadavg())}


def read_pool(paths) -> RadnetDataset:
    """Exported 'response' datasets of one cell (`aiida-mlresponse dataset export`), rows concatenated, in the units
    of the radnet reader (`RadnetDataset.from_dataset`; P branch fixed against the first row, as `load_radnet_h5` does)."""
    parts = []
    for path in paths:
        kind, arrays, attributes = read_npz(path)
        if kind != 'response':
            raise SystemExit(f'{path}: a `{kind}` dataset; the radnet pool is a `response` one.')
        parts.append((arrays, attributes))
    if len({tuple(attributes['atomic_numbers']) for _, attributes in parts}) != 1:
        raise SystemExit('the pool files hold different atoms.')
    columns = {name: np.concatenate([arrays[name] for arrays, _ in parts])
               for name in ('cells', 'positions', 'polarization', 'dielectric_tensor')}
    data = RadnetDataset.from_dataset(columns, parts[0][1], name='+'.join(pathlib.Path(path).stem for path in paths))
    data.polarization = fix_branch(data.polarization, data.polarization[0], data.cell)
    return data


def displacement_norm(positions) -> np.ndarray:
    delta = positions - positions.mean(axis=0)
    delta -= delta.mean(axis=1, keepdims=True)
    return np.sqrt((delta**2).sum(axis=(1, 2)))


def fit(data, rows, target, hyperparameters, seed=0):
    """(committee, model-file metadata, seconds) fitted on `rows` as the training CalcJob fits them."""
    start = time.perf_counter()
    committee, _ = fit_committee(data.positions[rows], data.cell, data.numbers, data.targets(target)[rows], target,
                                 hyperparameters=hyperparameters, log=None, seed=seed)
    metadata = model_metadata(committee, target, data.cell, data.numbers, len(rows))
    return committee, metadata, time.perf_counter() - start


def predict(committee, metadata, data, rows) -> dict:
    return predict_columns('radnet_committee', committee, metadata, {'positions': data.positions[rows] / ANGSTROM_TO_BOHR})


def labels(data, rows) -> dict:
    return {'polarization': data.polarization[rows], 'dielectric_tensor': data.dielectric[rows]}


def spread_quality(mean, spread, truth) -> dict:
    """Coverage within 2 σ and Spearman of σ against |error|, over components and per configuration, and the
    Spearman over components that an exact σ could reach on these errors (`spearman_ceiling`)."""
    to_rows = (lambda a: tensor_to_voigt(a)) if np.ndim(truth) == 3 else (lambda a: np.asarray(a))
    signed, sigma = to_rows(mean) - to_rows(truth), to_rows(spread)
    error = np.abs(signed)
    return {'mae': float(error.mean()), 'max': float(error.max()), 'within_2_sigma': float((error <= 2 * sigma).mean()),
            'spearman': float(spearmanr(sigma.ravel(), error.ravel())[0]),
            'spearman_per_configuration': float(spearmanr(sigma.max(1), error.max(1))[0]),
            'spearman_ceiling': spearman_ceiling(signed)}


def spearman_ceiling(signed, draws=200, seed=0) -> float:
    """Spearman(σ, |error|) over components for an exact σ, if each error were Gaussian with a log-normal scale.

    Errors of one scale are Gaussian with kurtosis 3; a scale varying with log-sd s raises it to 3 exp(4 s²). So
    the errors' kurtosis per component gives s, and drawing σ with that s (and each component's rms) and errors
    N(0, σ²) gives the Spearman a perfect spread would reach: near 0 where the errors are homoscedastic, whatever
    the committee. A rough estimate (±0.1 on synthetic errors of 300 × 3: kurtosis from a few hundred rows is
    noisy and biased low where the scale varies much; heavy-tailed errors of one scale would read as a varying one).
    """
    centred = signed - signed.mean(axis=0)
    kurtosis = (centred**4).mean(axis=0) / np.maximum((centred**2).mean(axis=0) ** 2, 1e-300)
    log_sd = np.sqrt(np.maximum(np.log(kurtosis / 3), 0.0) / 4)
    rms = np.sqrt((centred**2).mean(axis=0))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        sigma = rms * np.exp(log_sd * rng.normal(size=centred.shape))
        values.append(spearmanr(sigma.ravel(), (sigma * np.abs(rng.normal(size=centred.shape))).ravel())[0])
    return float(np.mean(values))


def run_spread(system, data, log, committees=('before', 'after')) -> dict:
    norm = displacement_norm(data.positions)
    order = np.argsort(-norm)
    wide, rest = order[:100], np.random.default_rng(0).permutation(order[100:])
    test, train = rest[:150], np.sort(rest[150:])
    out = {}
    for target in ('polarization', 'dielectric'):
        column = COLUMNS[target]
        row = {'n_train': len(train), 'n_test': len(test), 'n_wide': len(wide)}
        for name, hyperparameters in (('before', BEFORE), ('after', {})):
            if name not in committees:
                continue
            committee, metadata, seconds = fit(data, train, target, hyperparameters)
            entry = {'fit_seconds': seconds}
            for split, rows in (('test', test), ('wide', wide), ('box', np.concatenate([test, wide]))):
                mean, spread = predict(committee, metadata, data, rows)[column]
                entry[split] = spread_quality(mean, spread, labels(data, rows)[column])
            row[name] = entry
            log(f'{system} {target} {name}: {json.dumps(entry)}')
        out[target] = row
    return out


def run_speed(system, data, log, size=10000, repeats=2) -> dict:
    """Seconds to score `size` displaced cells (both targets, `predict_columns`) with the committees of before and
    of now, fitted on 200 configurations (before: 1 CNN epoch, which changes the CNNs' weights, not their cost)."""
    rng = np.random.default_rng(1)
    sigma = float((data.positions - data.positions.mean(axis=0)).std())
    pool = data.positions.mean(axis=0) + rng.normal(0.0, sigma, (size,) + data.positions.shape[1:])
    train = np.arange(200)
    out = {'pool': size, 'displacement_sigma_bohr': sigma, 'repeats': repeats, 'seconds': 'least of the repeats'}
    def least_seconds(function):  # the least of a few: the machine is shared
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
        return min(seconds)

    configurations = {'positions': pool / ANGSTROM_TO_BOHR}
    for name, hyperparameters in (('before', dict(BEFORE, training={'epochs': 1})), ('after', {})):
        entry, models = {}, []
        for target, column in COLUMNS.items():
            committee, metadata, _ = fit(data, train, target, hyperparameters)
            models.append(('radnet_committee', committee, metadata))
            entry[target] = least_seconds(lambda: predict_columns('radnet_committee', committee, metadata, configurations))
            log(f'{system} {name} {target}: {size} candidates scored in {entry[target]:.1f} s')
        entry['both'] = sum(entry.values())
        if name == 'after':  # what a round runs (`al_steps.score_pool`): both committees on one pass of cubes
            entry['round'] = least_seconds(lambda: predict_models(models, configurations))
            entry['members'] = len(committee)
            log(f'{system} {name}: a round\'s scoring (P and ε∞ at once) of {size} candidates in {entry["round"]:.1f} s')
        out[name] = entry
    # What is left: the density cubes alone (what a cube-polynomial head needs), as `predict_positions` makes them.
    atom_cubes = committee.atom_cubes()
    start = time.perf_counter()
    for first in range(0, size, 64):
        atom_cubes.batch(pool[first:first + 64], data.cell, data.numbers)
    out['density_cubes_one_pass'] = time.perf_counter() - start
    log(f'{system}: the density cubes of {size} candidates alone: {out["density_cubes_one_pass"]:.1f} s')
    return out


def uniform_test_rows(norm, bins=10, per_bin=20, seed=0, max_fraction=1.0) -> np.ndarray:
    """Up to `per_bin` rows of each of `bins` equal-width bins of `norm`, and at most `max_fraction` of a bin's rows
    (below 1, the pool keeps rows in the sparse tail bins too, so a picking rule can reach them)."""
    edges = np.linspace(norm.min(), norm.max(), bins + 1)
    which = np.clip(np.digitize(norm, edges[1:-1]), 0, bins - 1)
    rng = np.random.default_rng(seed)
    rows = [np.flatnonzero(which == b) for b in range(bins)]
    return np.sort(np.concatenate([rng.permutation(r)[:min(per_bin, int(max_fraction * len(r)))] for r in rows]))


def run_al(system, data, args, log) -> dict:
    """One AL-vs-random run per seed (each its own test split, initial labels and random picks); with several
    seeds the curves are averaged over them and the labels-to-reach come from the mean curves."""
    runs = [run_al_seed(system, data, args, seed, log) for seed in range(args.seed, args.seed + args.seeds)]
    if len(runs) == 1:
        return runs[0]
    mean = {arm: [{'labels': point['labels'], 'errors': {
        column: {metric: float(np.mean([run['curves'][arm][k]['errors'][column][metric] for run in runs]))
                 for metric in ('mae', 'max')} for column in point['errors']}}
        for k, point in enumerate(runs[0]['curves'][arm])] for arm in runs[0]['curves']}
    return {**{key: runs[0][key] for key in ('initial', 'batch', 'budget')},
            'pool': [run['pool'] for run in runs], 'test': [run['test'] for run in runs], 'seeds': len(runs),
            'curves': mean, 'labels_to_reach_random_final': labels_to_reach(mean),
            'per_seed': [{'labels_to_reach_random_final': run['labels_to_reach_random_final'], 'curves': run['curves']}
                         for run in runs]}


def run_al_seed(system, data, args, seed, log) -> dict:
    norm = displacement_norm(data.positions)
    test = uniform_test_rows(norm, seed=seed, max_fraction=args.test_max_fraction)
    pool = np.setdiff1d(np.arange(len(data)), test)
    initial = np.random.default_rng(seed).choice(pool, args.initial, replace=False)
    reference = data.positions.mean(axis=0) / ANGSTROM_TO_BOHR
    truth = labels(data, test)
    curves = {}
    for arm in ('random', 'active'):
        rng = np.random.default_rng(seed + 1)
        chosen, curve = list(initial), []
        while True:
            start = time.perf_counter()
            models = {target: fit(data, np.array(chosen), target, args.hyperparameters) for target in COLUMNS}
            predictions = {}
            for committee, metadata, _ in models.values():
                predictions.update(predict(committee, metadata, data, test))
            errors = errors_against_labels(predictions, truth, {c: 1.0 for c in truth})['columns']
            curve.append({'labels': len(chosen), 'errors': errors, 'seconds': time.perf_counter() - start})
            log(f'{system} seed {seed} {arm} {len(chosen)} labels: ' + ', '.join(
                f'{c} MAE {e["mae"]:.3e} max {e["max"]:.3e}' for c, e in errors.items()))
            if len(chosen) >= args.budget:
                break
            left = np.setdiff1d(pool, chosen)
            batch = min(args.batch, args.budget - len(chosen))
            if arm == 'random':
                chosen += list(rng.choice(left, batch, replace=False))
                continue
            scored = {}
            for committee, metadata, _ in models.values():  # the selection sees no label of `left`
                scored.update(predict(committee, metadata, data, pool))
            scales = {c: acq.label_scale(labels(data, np.array(chosen))[c]) for c in scored}
            positions = data.positions[pool] / ANGSTROM_TO_BOHR
            reasons = acq.physics_rejections(positions, np.repeat(data.cell[None] / ANGSTROM_TO_BOHR, len(pool), 0),
                                             scored['dielectric_tensor'][0])
            plan = acq.plan_round({c: s for c, (_, s) in scored.items()}, scales, 0.0, np.inf, batch,
                                  acq.displacement_descriptor(positions, reference), np.isin(pool, chosen), reasons)
            chosen += [int(pool[row]) for row in plan.picked]
        curves[arm] = curve
    return {'pool': len(pool), 'test': len(test), 'initial': args.initial, 'batch': args.batch, 'budget': args.budget,
            'curves': curves, 'labels_to_reach_random_final': labels_to_reach(curves)}


def labels_to_reach(curves) -> dict:
    final = curves['random'][-1]['errors']
    out = {}
    for column, errors in final.items():
        for metric in ('mae', 'max'):
            out[f'{column}_{metric}'] = {arm: next((p['labels'] for p in curve if p['errors'][column][metric]
                                                    <= errors[metric]), None) for arm, curve in curves.items()}
    return out


def radnet_al_runs(document) -> list:
    """(key, system, result) of every radnet AL-vs-random run in the file: the shared data's and any --pool one's."""
    return [(key, system, result) for key, part in document.items() if key.startswith('active_learning')
            for system, result in part.items() if isinstance(result, dict) and 'curves' in result]


def print_tables(document):
    spread_runs = [(key, system, parts) for key, part in document.items() if key.startswith('spread')
                   for system, parts in part.items()]
    for key, system, parts in spread_runs:
        for target, row in parts.items():
            if not isinstance(row, dict) or 'after' not in row:
                continue
            for name in ('before', 'after'):
                if name not in row:
                    continue
                e = row[name]
                print(f'{key} {system:4s} {target:12s} {name:6s} test MAE {e["test"]["mae"]:.3e}  within 2σ test '
                      f'{e["test"]["within_2_sigma"]:.2f} wide {e["wide"]["within_2_sigma"]:.2f}  Spearman test '
                      f'{e["test"]["spearman"]:.2f} wide {e["wide"]["spearman"]:.2f}  per config test '
                      f'{e["test"]["spearman_per_configuration"]:.2f} wide {e["wide"]["spearman_per_configuration"]:.2f}'
                      f'  box {e["box"]["within_2_sigma"]:.2f} / {e["box"]["spearman"]:.2f}  fit {e["fit_seconds"]:.0f} s'
                      + (f'  best possible Spearman test {e["test"]["spearman_ceiling"]:.2f} box '
                         f'{e["box"]["spearman_ceiling"]:.2f}' if 'spearman_ceiling' in e['test'] else ''))
    for system, result in document.get('speed', {}).items():
        print(f'{system}: {result["pool"]} candidates scored (s, P + ε∞): before {result["before"]["both"]:.1f} '
              f'({result["before"]["polarization"]:.1f} + {result["before"]["dielectric"]:.1f}), after '
              f'{result["after"]["both"]:.1f} ({result["after"]["polarization"]:.1f} + {result["after"]["dielectric"]:.1f}), '
              f'a round (both at once) {result["after"].get("round", float("nan")):.1f}; '
              f'density cubes alone {result["density_cubes_one_pass"]:.1f}')
    for key, system, result in radnet_al_runs(document):
        print(f'{key} {system}: pool {result["pool"]}, test {result["test"]} (uniform in displacement size)'
              + (f', mean of {result["seeds"]} seeds' if 'seeds' in result else ''))
        for random, active in zip(result['curves']['random'], result['curves']['active']):
            cells = [f'{c} MAE {random["errors"][c]["mae"]:.2e}/{active["errors"][c]["mae"]:.2e} max '
                     f'{random["errors"][c]["max"]:.2e}/{active["errors"][c]["max"]:.2e}' for c in random['errors']]
            print(f'  {random["labels"]:4d} labels (random/active): ' + '; '.join(cells))
        print('  labels to reach random\'s final error (random/active): ' + ', '.join(
            f'{k} {v["random"]}/{v["active"]}' for k, v in result['labels_to_reach_random_final'].items()))


def plot(document, path):
    """Test MAE and max against labels, random and active, one panel per system and column."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [(key, system, result, column) for key, system, result in radnet_al_runs(document)
              for column in result['curves']['random'][0]['errors']]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    for axis, (key, system, result, column) in zip(axes[0], panels):
        for arm, colour in (('random', 'tab:grey'), ('active', 'tab:red')):
            curve = result['curves'][arm]
            labels_ = [p['labels'] for p in curve]
            for metric, style in (('mae', '-'), ('max', '--')):
                axis.semilogy(labels_, [p['errors'][column][metric] for p in curve], style, color=colour,
                              label=f'{arm} {metric}')
        axis.set_title(f'{system} {column}' + key.removeprefix('active_learning').replace('_', ' '), fontsize=9)
        axis.set_xlabel('labels')
    axes[0][0].set_ylabel('test error (e/Bohr² or ε∞)')
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--part', nargs='+', default=['spread', 'speed', 'al'], choices=['spread', 'speed', 'al'])
    parser.add_argument('--systems', nargs='+', default=['BN', 'GaAs'], choices=sorted(SYSTEMS))
    parser.add_argument('--initial', type=int, default=20)
    parser.add_argument('--batch', type=int, default=20)
    parser.add_argument('--budget', type=int, default=160)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--seeds', type=int, default=1, help='al: runs with seeds seed, seed+1, ...; curves averaged')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--hyperparameters', type=json.loads, default={}, help='fit_committee overrides (JSON)')
    parser.add_argument('--test-max-fraction', type=float, default=1.0,
                        help='the al test set takes at most this share of a displacement bin (below 1 the pool keeps tail rows)')
    parser.add_argument('--pool', nargs='+', type=pathlib.Path,
                        help="exported 'response' datasets of the one --systems entry, rows concatenated: the pool with "
                             "pre-computed labels in place of the shared HDF5; results under `<part key>_<--key-suffix>`")
    parser.add_argument('--key-suffix', default='pool', help='with --pool: suffix of the result keys')
    parser.add_argument('--output', default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.pool and len(args.systems) != 1:
        parser.error('--pool is one system\'s data: give one --systems entry.')
    torch.set_num_threads(args.threads)
    output = pathlib.Path(args.output)
    read = lambda: json.loads(output.read_text()) if output.exists() else {}  # noqa: E731
    document = read()
    log = lambda line: print(line, flush=True)  # noqa: E731
    for system in args.systems:
        data = read_pool(args.pool) if args.pool else load_radnet_h5(DATA / SYSTEMS[system])
        for part in args.part:
            start = time.perf_counter()
            key = {'al': 'active_learning'}.get(part, part)
            if args.pool:
                key = f'{key}_{args.key_suffix}'
            # on a pool of the package's labels only the committee of now: the CNN committees of before are the
            # shared data's comparison
            committees = ('after',) if args.pool else ('before', 'after')
            result = {'spread': lambda: run_spread(system, data, log, committees),
                      'speed': lambda: run_speed(system, data, log),
                      'al': lambda: run_al(system, data, args, log)}[part]()
            result['wall_seconds'] = time.perf_counter() - start
            settings = {'hyperparameters': args.hyperparameters or 'package defaults',
                        'trust': {'lo': 0.0, 'hi': 'inf', 'mode': 'relative'}, 'min_separation': 'plan_round default',
                        'seed': args.seed, 'seeds': args.seeds, 'test_max_fraction': args.test_max_fraction}
            document = read()  # read again: other benchmarks write their own keys of this file meanwhile
            document.setdefault(key, {})[system] = result
            if args.pool:  # the shared-data parts' document-wide entries stay theirs
                result.update({'data': f"{len(data)} rows of {', '.join(path.name for path in args.pool)}",
                               'settings': settings, 'machine': machine()})
                output.write_text(json.dumps(document, indent=1))
                continue
            document.update({
                'description': __doc__.split('\n\n')[0], 'machine': machine(),
                'units': {'polarization': 'e/Bohr^2 (MAE, max, spread)', 'dielectric': 'dimensionless',
                          'seconds': 's wall', 'displacements': 'Bohr'},
                'data': 'shared radnet HDF5 (GaAs.h5, BN_cubic.h5), 800 configurations each, labels pre-computed',
            })
            if part == 'al':
                document['al_settings'] = settings
            output.write_text(json.dumps(document, indent=1))
    print_tables(document)
    plot(document, output.with_suffix('.png'))


if __name__ == '__main__':
    main()
