"""Where the PCA-MLP's free-energy errors sit (strained Mg): cross-validated errors against the deformation, the
relaxed internal coordinate and the predicted stiffness.

Data: `mg_strain` datasets exported from labelling campaigns of the package (`workchains/run_mg_labels.py`, then
`aiida-mlresponse dataset export PK mg.npz`), rows concatenated. `--folds` folds (seeded): each is predicted by a
committee fitted on the others with the package defaults (`ml.pcamlp.fit.fit_pcamlp`, the F and R heads, F also
on ABINIT's stress, as `benchmarks/active_learning_mg.py`). Per row: |F error| (mHa per 4-atom cell), the largest
|R error| (reduced coordinate), the deformation size |D - D0| in units of the sampling scale
(`al_steps.DEFORMATION_SCALE`), its largest stretch |λ - 1| and angle |θ - 90°|, |R - R(D0)| (how far the relaxation
moved the atoms from the reference's internal coordinate) and the relative stiffness of the predicted strain Hessian
(`al_steps.relative_stiffness`, the active-learning instability score). Printed and written: the F error by
quartile of each descriptor, Spearman's ρ of |F error| against each, and the rows of the largest errors.

Usage: nice -n 10 .venv/bin/python benchmarks/mg_error_map.py mg.npz [more.npz ...] [--folds 4]
(the recorded run: benchmarks/data/mg_fast_172.npz benchmarks/data/mg_fast_56.npz, see benchmarks/data/README.md)
Writes benchmarks/results/mg_error_map.json.
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
from scipy.stats import spearmanr  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

from active_learning import machine  # noqa: E402
from active_learning_mg import fit, read_exports  # noqa: E402

from aiida_mlresponse.ml.scoring import predict_columns  # noqa: E402
from aiida_mlresponse.workflows.al_steps import DEFORMATION_SCALE, REFERENCE_DEFORMATION, relative_stiffness  # noqa: E402

RESULTS = ROOT / 'benchmarks' / 'results' / 'mg_error_map.json'


def fold_splits(n: int, folds: int, seed: int):
    """(k, train rows, test rows) of each fold: a seeded permutation, fold k its rows k, k + folds, ..."""
    order = np.random.default_rng(seed).permutation(n)
    for k in range(folds):
        test = order[k::folds]
        yield k, np.setdiff1d(order, test), test


def cross_validated(data: dict, folds: int, seed: int) -> dict:
    """Per row, the out-of-fold prediction errors and the predicted relative stiffness."""
    f_error, r_error, stiffness = (np.zeros(len(data['F'])) for _ in range(3))
    for k, train, test in fold_splits(len(data['F']), folds, seed):
        model = fit(data, train, seed + k)
        predictions = predict_columns('pcamlp', model, {}, {'deformations': data['D'][test]})
        f_error[test] = 1e3 * np.abs(predictions['free_energy'][0] - data['F'][test])
        r_error[test] = np.abs(predictions['R'][0] - data['R'][test]).max(axis=1)
        stiffness[test] = relative_stiffness([('pcamlp', model, {})], data['D'][test])
        print(f'fold {k}: {len(train)} train / {len(test)} test, F MAE {f_error[test].mean():.3f} mHa', flush=True)
    return {'F_error_mHa': f_error, 'R_error': r_error, 'relative_stiffness': stiffness}


def descriptors(data: dict, stiffness: np.ndarray) -> dict:
    d = data['D'] - REFERENCE_DEFORMATION
    reference_r = data['R'][np.argmin(np.linalg.norm(d / DEFORMATION_SCALE, axis=1))]
    return {'deformation_size': np.linalg.norm(d / DEFORMATION_SCALE, axis=1),
            'largest_stretch': np.abs(d[:, :3]).max(axis=1), 'largest_angle_deg': np.abs(d[:, 3:]).max(axis=1),
            'relaxation_from_reference': np.abs(data['R'] - reference_r).max(axis=1),
            'relative_stiffness': stiffness}


def summarize(errors: np.ndarray, values: dict, r_error: np.ndarray, top: int) -> dict:
    out = {'F_error_mHa': {'mae': float(errors.mean()), 'rmse': float(np.sqrt((errors**2).mean())),
                           'max': float(errors.max()), 'median': float(np.median(errors))},
           'R_error': {'mae': float(r_error.mean()), 'max': float(r_error.max())},
           'spearman_F_error_against': {}, 'F_error_by_quartile': {}}
    for name, value in {**values, 'R_error': r_error}.items():
        out['spearman_F_error_against'][name] = float(spearmanr(value, errors).statistic)
        edges = np.quantile(value, [0.0, 0.25, 0.5, 0.75, 1.0])
        quartile = np.clip(np.searchsorted(edges, value, side='right') - 1, 0, 3)
        out['F_error_by_quartile'][name] = [
            {'from': float(edges[q]), 'to': float(edges[q + 1]), 'mae': float(errors[quartile == q].mean()),
             'max': float(errors[quartile == q].max())} for q in range(4) if (quartile == q).any()]
    worst = np.argsort(errors)[::-1][:top]
    out['largest_errors'] = [{'row': int(row), 'F_error_mHa': float(errors[row]), 'R_error': float(r_error[row]),
                              **{name: float(value[row]) for name, value in values.items()}} for row in worst]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('datasets', nargs='+', help='exported mg_strain datasets (.npz), same protocol; rows concatenated')
    parser.add_argument('--folds', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--top', type=int, default=8, help='rows of the largest F errors to list')
    parser.add_argument('--output', default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = read_exports(args.datasets)
    cv = cross_validated(data, args.folds, args.seed)
    values = descriptors(data, cv['relative_stiffness'])
    result = {'data': f'mg_strain datasets {[pathlib.Path(p).name for p in args.datasets]}: {len(data["F"])} rows',
              'folds': args.folds, 'seed': args.seed,
              'units': {'F_error_mHa': 'mHa per 4-atom cell', 'R_error': 'reduced coordinate',
                        'deformation_size': '|D - D0| / (0.05, 0.05, 0.05, 3°, 3°, 3°)'},
              **summarize(cv['F_error_mHa'], values, cv['R_error'], args.top),
              'wall_seconds': time.perf_counter() - start, 'machine': machine()}
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1) + '\n')
    f = result['F_error_mHa']
    print(f'\n{len(data["F"])} rows, {args.folds}-fold: F MAE {f["mae"]:.3f} RMSE {f["rmse"]:.3f} median '
          f'{f["median"]:.3f} max {f["max"]:.3f} mHa; R MAE {result["R_error"]["mae"]:.4f} max {result["R_error"]["max"]:.4f}')
    for name, rho in result['spearman_F_error_against'].items():
        quartiles = result['F_error_by_quartile'][name]
        print(f'{name:26s} Spearman {rho:+.2f}; F MAE / max by quartile: ' + ', '.join(
            f'{q["mae"]:.2f}/{q["max"]:.2f}' for q in quartiles))
    print('largest F errors:')
    for row in result['largest_errors']:
        print('  ' + ', '.join(f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()))
    print(f'written to {args.output}')


if __name__ == '__main__':
    main()
