"""Active learning against random sampling for the PCA-MLP (strained Mg): free energy and stress.

Data: an `mg_strain` dataset exported from a labelling campaign of the package (`workchains/run_mg_labels.py`,
then `aiida-mlresponse dataset export PK mg.npz`), used as a pool with pre-computed labels: a row's labels are
read only after it is picked. Committees are fitted by `ml.pcamlp.fit.fit_pcamlp` (what `TrainingCalculation`
runs; the F and R heads with F also fitted to ABINIT's stress, package defaults; the field nets are left out:
no score or error here depends on them), predicted by `ml.scoring.predict_columns` (what the work chain scores
with), and every pick is `sampling.acquisition.plan_round` with the work chain's relative stiffness
(`workflows.al_steps.relative_stiffness`).

The test set covers the sampled box uniformly in deformation size (10 equal-width bins of |D - D0| in units of
the sampling σ, up to `--test-per-bin` rows each and at most half of a bin's rows: the tails are over-represented
against the Gaussian sample, and the pool keeps rows there too, or the largest test errors would be extrapolation
no picking rule can reach); the rest is the pool. Every arm starts from the same random `--initial` labels and adds `--batch` per round up
to `--budget`: `random`, `active` (committee spread of F and R relative to their label scale, diversity kept),
`active+instability` (the same, with `--instability-share` of each batch going to the softest predicted strain
mode, the work chain's default for strain campaigns). Test MAE and max of F (mHa per cell) and of the Cauchy
stress (GPa, by autograd through the committee-mean F) per round, and the labels each arm needs to reach
random's final MAE and max; each of `--seeds` draws its own split, initial labels and random picks, and the
labels-to-reach come from the curves averaged over the seeds (one seed's curve is too noisy to compare arms).

Usage: nice -n 10 .venv/bin/python benchmarks/active_learning_mg.py mg.npz [more.npz ...] [--budget 100] [--batch 10]
(the recorded pools: benchmarks/data/mg_fast_172.npz benchmarks/data/mg_fast_56.npz, and benchmarks/data/mg_test_182.npz
with --key active_learning_pcamlp_test_protocol; see benchmarks/data/README.md)
Writes the part `active_learning_pcamlp` (`--key`) of benchmarks/results/active_learning.json and prints the table.
"""

from __future__ import annotations

import os

for _name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_name, '1')

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from active_learning import RESULTS, labels_to_reach, machine, uniform_test_rows  # noqa: E402

from aiida_mlresponse.ml.pcamlp.data import read_dataset  # noqa: E402
from aiida_mlresponse.ml.pcamlp.fit import fit_pcamlp  # noqa: E402
from aiida_mlresponse.ml.pcamlp.training_loop import FitSettings  # noqa: E402
from aiida_mlresponse.ml.scoring import predict_columns  # noqa: E402
from aiida_mlresponse.physics.strain import deformation_to_cell  # noqa: E402
from aiida_mlresponse.physics.stress import cauchy_stress  # noqa: E402
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA  # noqa: E402
from aiida_mlresponse.sampling import acquisition as acq  # noqa: E402
from aiida_mlresponse.workflows.al_steps import DEFORMATION_SCALE, REFERENCE_DEFORMATION, relative_stiffness  # noqa: E402


def read_exports(paths) -> dict:
    """The rows of exported `mg_strain` datasets, concatenated: D, F, R and stress (the model-named arrays)."""
    parts = [read_dataset(path) for path in paths]
    return {name: np.concatenate([part[name] for part in parts]) for name in ('D', 'F', 'R', 'stress')}


def fit(data, rows, seed, settings: dict | None = None):
    """The package's fit of the F (also on the stress) and R heads on `rows`; `settings` override `FitSettings`."""
    model, _ = fit_pcamlp(data['D'][rows], {'F': data['F'][rows], 'R': data['R'][rows]}, None,
                          stress=data['stress'][rows],
                          settings=FitSettings(**{'seed': seed, 'log_every': 10**9, **(settings or {})}))
    return model


def test_errors(model, data, rows) -> dict:
    f = predict_columns('pcamlp', model, {}, {'deformations': data['D'][rows]})['free_energy'][0]
    f_error = 1e3 * np.abs(f - data['F'][rows])
    sigma = cauchy_stress(model.double().free_energy, data['D'][rows])
    model.float()
    s_error = HA_PER_BOHR3_TO_GPA * np.abs(sigma - data['stress'][rows])
    return {'free_energy_mHa': {'mae': float(f_error.mean()), 'max': float(f_error.max())},
            'stress_GPa': {'mae': float(s_error.mean()), 'max': float(s_error.max())}}


def pick(arm, model, data, pool, chosen, batch, share, rng) -> list[int]:
    left = np.setdiff1d(pool, chosen)
    if arm == 'random':
        return [int(r) for r in rng.choice(left, batch, replace=False)]
    predictions = predict_columns('pcamlp', model, {}, {'deformations': data['D'][pool]})  # no label of `left` seen
    scales = {'free_energy': acq.label_scale(data['F'][chosen]), 'R': acq.label_scale(data['R'][chosen])}
    stiffness = relative_stiffness([('pcamlp', model, {})], data['D'][pool]) if share else None
    plan = acq.plan_round({c: s for c, (_, s) in predictions.items()}, scales, 0.0, np.inf, batch,
                          (data['D'][pool] - REFERENCE_DEFORMATION) / DEFORMATION_SCALE, np.isin(pool, chosen),
                          acq.physics_rejections(cells=deformation_to_cell(data['D'][pool])), stiffness=stiffness,
                          instability_share=share)
    return [int(pool[row]) for row in plan.picked]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('datasets', nargs='+', help='exported mg_strain datasets (.npz), same protocol; rows concatenated')
    parser.add_argument('--initial', type=int, default=10)
    parser.add_argument('--batch', type=int, default=10)
    parser.add_argument('--budget', type=int, default=100)
    parser.add_argument('--test-per-bin', type=int, default=8)
    parser.add_argument('--instability-share', type=float, default=0.25)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='each seed draws its own test set, pool split, initial labels and random picks')
    parser.add_argument('--arms', nargs='+', default=['random', 'active', 'active+instability'])
    parser.add_argument('--output', default=str(RESULTS))
    parser.add_argument('--key', default='active_learning_pcamlp', help='the part of the output JSON to write')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = read_exports(args.datasets)
    size = np.linalg.norm((data['D'] - REFERENCE_DEFORMATION) / DEFORMATION_SCALE, axis=1)
    runs = {}
    for seed in args.seeds:
        test = uniform_test_rows(size, per_bin=args.test_per_bin, seed=seed, max_fraction=0.5)
        pool = np.setdiff1d(np.arange(len(size)), test)
        initial = np.random.default_rng(seed).choice(pool, args.initial, replace=False)
        curves = {arm: run_arm(arm, data, test, pool, initial, args, seed) for arm in args.arms}
        runs[str(seed)] = {'pool': int(len(pool)), 'test': int(len(test)), 'curves': curves,
                           'labels_to_reach_random_final': labels_to_reach(curves) if 'random' in curves else None}
    mean = mean_curves([run['curves'] for run in runs.values()])
    part = {'data': f'mg_strain datasets {[pathlib.Path(p).name for p in args.datasets]}: {len(size)} labelled configurations',
            'initial': args.initial, 'batch': args.batch, 'budget': args.budget, 'instability_share': args.instability_share,
            'units': {'free_energy_mHa': 'mHa per 4-atom cell', 'stress_GPa': 'GPa, all 9 components'},
            'seeds': runs, 'mean_over_seeds': mean,
            'labels_to_reach_random_final': labels_to_reach(mean) if 'random' in mean else None,
            'wall_seconds': time.perf_counter() - start, 'machine': machine()}
    path = pathlib.Path(args.output)
    document = json.loads(path.read_text()) if path.exists() else {}
    document[args.key] = part
    path.write_text(json.dumps(document, indent=1) + '\n')
    print(f'\nmean over seeds {args.seeds}:')
    for arm, curve in mean.items():
        for point in curve:
            print(f'{arm:20s} {point["labels"]:4d} labels: ' + ', '.join(
                f'{c} MAE {e["mae"]:.4f} max {e["max"]:.4f}' for c, e in point['errors'].items()))
    if part['labels_to_reach_random_final']:
        print('labels to reach random sampling\'s final error (mean curves):')
        for key, arms in part['labels_to_reach_random_final'].items():
            print(f'  {key:22s} ' + '  '.join(f'{arm} {n}' for arm, n in arms.items()))


def run_arm(arm, data, test, pool, initial, args, seed) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    share = args.instability_share if arm == 'active+instability' else 0.0
    chosen, curve = [int(r) for r in initial], []
    while True:
        t0 = time.perf_counter()
        model = fit(data, np.array(chosen), seed)
        errors = test_errors(model, data, test)
        curve.append({'labels': len(chosen), 'errors': errors, 'seconds': time.perf_counter() - t0})
        print(f'seed {seed} {arm:20s} {len(chosen):4d} labels: ' + ', '.join(
            f'{c} MAE {e["mae"]:.4f} max {e["max"]:.4f}' for c, e in errors.items()), flush=True)
        if len(chosen) >= min(args.budget, len(pool)):
            return curve
        chosen += pick(arm, model, data, pool, chosen, min(args.batch, args.budget - len(chosen)), share, rng)


def mean_curves(seed_curves: list[dict]) -> dict:
    """Per arm and label count, the test MAE and max averaged over the seeds."""
    mean = {}
    for arm in seed_curves[0]:
        mean[arm] = []
        for k, point in enumerate(seed_curves[0][arm]):
            errors = {column: {metric: float(np.mean([curves[arm][k]['errors'][column][metric] for curves in seed_curves]))
                               for metric in ('mae', 'max')} for column in point['errors']}
            mean[arm].append({'labels': point['labels'], 'errors': errors})
    return mean


if __name__ == '__main__':
    main()
