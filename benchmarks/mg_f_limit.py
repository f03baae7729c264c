"""What limits the PCA-MLP's free energy on strained Mg: the labels, the model, or how many labels there are.

Three measurements on the same `mg_strain` exports (`benchmarks/data/mg_fast_*.npz`, see its README) and the same
`--folds` folds as `mg_error_map.py` (seeded permutation, fold k = rows k, k + folds, ...):

1. **Label consistency.** ABINIT gives F and its derivative (the stress) at every label. For two labels a, b the
   trapezoid rule F(b) - F(a) = ½ (g_a + g_b) · (D_b - D_a) holds up to a third-order term in |D_b - D_a|, with
   g = ∂F/∂D from the stress (`physics.stress.free_energy_gradient`, the inverse of σ_v = Σ_m g_m M[m, v]). Its residual over the
   closest pairs bounds the labels' noise (F against F, and F against stress): if it fell to a floor as the
   distance shrinks, that floor would be the noise any model fitting both must meet.
2. **Learning curve.** The package's fit (`ml.pcamlp.fit.fit_pcamlp`, F and R heads, F also on the stress,
   `FitSettings` defaults overridden by `--settings`) on 1/4, 1/2, 3/4 and all of each fold's training rows,
   errors on the same test rows. A model limited by noise flattens; one limited by the labels' density keeps its
   slope, and the slope says how many labels a target error needs.
3. **Other models on the same folds.** A least-squares polynomial in D (degrees 3 and 4), fitted to F and the
   stress together; with `--gp`, a Gaussian process with gradient observations (squared-exponential kernel with a
   length per component of the standardized D, a quadratic mean fitted first to F and g, noise levels of F and g
   and the kernel's scales by maximum marginal likelihood, `--gp-iterations` Adam steps). If they do no better
   than the PCA-MLP, the model is not what limits it.

Usage: nice -n 10 .venv/bin/python benchmarks/mg_f_limit.py benchmarks/data/mg_fast_172.npz \
           benchmarks/data/mg_fast_56.npz benchmarks/data/mg_fast_234.npz [--gp] [--settings '{"bootstrap": false}']
Writes benchmarks/results/mg_f_limit.json (`--output`) and prints the tables.
"""

from __future__ import annotations

import os

for _name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_name, '1')

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

from active_learning import machine  # noqa: E402
from active_learning_mg import fit, read_exports  # noqa: E402
from mg_error_map import fold_splits  # noqa: E402

from aiida_mlresponse.ml.scoring import predict_columns  # noqa: E402
from aiida_mlresponse.physics.stress import free_energy_gradient  # noqa: E402
from aiida_mlresponse.workflows.al_steps import DEFORMATION_SCALE, REFERENCE_DEFORMATION  # noqa: E402

RESULTS = ROOT / 'benchmarks' / 'results' / 'mg_f_limit.json'
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DISTANCE_BINS = (0.0, 0.5, 0.7, 1.0, 1.5)  # |D_b - D_a| in units of DEFORMATION_SCALE


def label_consistency(data: dict, gradient: np.ndarray) -> dict:
    """Trapezoid residuals |F_b - F_a - ½ (g_a + g_b)·(D_b - D_a)| (mHa) of every pair, by pair distance."""
    a, b = np.triu_indices(len(data['F']), 1)
    distance = np.linalg.norm((data['D'][b] - data['D'][a]) / DEFORMATION_SCALE, axis=1)
    residual = 1e3 * np.abs(data['F'][b] - data['F'][a]
                            - 0.5 * ((gradient[a] + gradient[b]) * (data['D'][b] - data['D'][a])).sum(1))
    bins = []
    for lo, hi in zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:]):
        inside = (distance >= lo) & (distance < hi)
        if inside.any():
            bins.append({'from': lo, 'to': hi, 'pairs': int(inside.sum()), 'median': float(np.median(residual[inside])),
                         'mean': float(residual[inside].mean()), 'max': float(residual[inside].max())})
    closest = np.argsort(distance)[:10]
    # the bins' medians against their pairs' median distance as floor + a d³: the third-order term alone would
    # go to zero with d, the floor is what the labels' noise leaves (fitted on bins of at least 20 pairs)
    usable = [(np.median(distance[(distance >= b['from']) & (distance < b['to'])]), b['median']) for b in bins
              if b['pairs'] >= 20]
    d, med = np.array(usable).T
    floor, cubic = np.linalg.lstsq(np.stack([np.ones_like(d), d ** 3], 1), med, rcond=None)[0]
    return {'by_distance': bins, 'median_fit': {'floor_mHa': float(floor), 'cubic_mHa': float(cubic),
                                                'bins_used': len(usable)},
            'closest_pairs': [{'distance': float(distance[k]), 'residual_mHa': float(residual[k])} for k in closest]}


def errors_mha(predicted, data, rows) -> np.ndarray:
    return 1e3 * np.abs(np.asarray(predicted) - data['F'][rows])


def summary(errors: np.ndarray) -> dict:
    return {'mae': float(errors.mean()), 'median': float(np.median(errors)), 'max': float(errors.max()),
            'rmse': float(np.sqrt((errors ** 2).mean()))}


def learning_curve(data: dict, folds: int, seed: int, settings: dict) -> list[dict]:
    points = []
    for fraction in FRACTIONS:
        errors, sizes = np.zeros(len(data['F'])), []
        for k, train, test in fold_splits(len(data['F']), folds, seed):
            rows = np.random.default_rng(seed + k).permutation(train)[: int(round(fraction * len(train)))]
            model = fit(data, rows, seed + k, settings)
            f = predict_columns('pcamlp', model, {}, {'deformations': data['D'][test]})['free_energy'][0]
            errors[test] = errors_mha(f, data, test)
            sizes.append(len(rows))
        points.append({'training_rows': float(np.mean(sizes)), **summary(errors)})
        print(f'PCA-MLP, {np.mean(sizes):.0f} training rows: F MAE {errors.mean():.3f} median {np.median(errors):.3f} '
              f'max {errors.max():.2f} mHa', flush=True)
    # the slope of the larger half of the curve (the smallest fits are far from the asymptote)
    n = np.array([p['training_rows'] for p in points])[-3:]
    mae = np.array([p['mae'] for p in points])[-3:]
    slope, intercept = np.polyfit(np.log(n), np.log(mae), 1)
    return points, {'exponent': float(slope),
                    'labels_for_0.05_mHa': float(np.exp((np.log(0.05) - intercept) / slope)) if slope < 0 else None}


def monomials(degree: int):
    return [m for d in range(degree + 1) for m in itertools.combinations_with_replacement(range(6), d)]


def polynomial_design(x: np.ndarray, terms) -> tuple[np.ndarray, np.ndarray]:
    """Values (N, T) and derivatives with respect to x (N, 6, T) of the monomials."""
    values = np.stack([np.prod(x[:, list(t)], axis=1) if t else np.ones(len(x)) for t in terms], 1)
    slopes = np.zeros((len(x), 6, len(terms)))
    for j, t in enumerate(terms):
        for i in set(t):
            rest = list(t)
            rest.remove(i)
            slopes[:, i, j] = t.count(i) * (np.prod(x[:, rest], axis=1) if rest else 1.0)
    return values, slopes


def polynomial_baseline(data: dict, gradient: np.ndarray, folds: int, seed: int, degree: int) -> dict:
    """A polynomial in standardized D fitted to F and g together (each g component weighted to F's scale)."""
    x = (data['D'] - REFERENCE_DEFORMATION) / DEFORMATION_SCALE
    gx = gradient * DEFORMATION_SCALE  # ∂F/∂x
    weight = 1.0 / np.abs(gx).mean(0)
    terms = monomials(degree)
    values, slopes = polynomial_design(x, terms)
    errors = np.zeros(len(data['F']))
    for _, train, test in fold_splits(len(data['F']), folds, seed):
        a = np.concatenate([values[train], (slopes[train] * weight[None, :, None]).reshape(-1, len(terms))])
        y = np.concatenate([data['F'][train], (gx[train] * weight).reshape(-1)])
        scale = np.abs(a).max(0)
        coefficients = np.linalg.lstsq(a / scale, y, rcond=None)[0] / scale
        errors[test] = errors_mha(values[test] @ coefficients, data, test)
    return {'model': f'polynomial of degree {degree} in D ({len(terms)} terms), F + stress', **summary(errors)}


def _gp_kernel(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Joint covariance of (f, ∂f/∂x) at a against b for a squared-exponential kernel: ((1+6)Na, (1+6)Nb)."""
    diff = (a[:, None, :] - b[None, :, :]) / lengths ** 2  # (Na, Nb, 6), already over l²
    k = variance * torch.exp(-0.5 * (diff * (a[:, None, :] - b[None, :, :])).sum(-1))
    f_g = k[..., None] * diff  # cov(f(a), ∂f(b)/∂b_j)
    g_g = k[..., None, None] * (torch.diag(1.0 / lengths ** 2) - diff[..., :, None] * diff[..., None, :])
    na, nb = k.shape
    top = torch.cat([k, f_g.reshape(na, nb * 6)], 1)
    bottom = torch.cat([(-f_g).permute(0, 2, 1).reshape(na * 6, nb), g_g.permute(0, 2, 1, 3).reshape(na * 6, nb * 6)], 1)
    return torch.cat([top, bottom], 0)


def gp_baseline(data: dict, gradient: np.ndarray, folds: int, seed: int, iterations: int) -> dict:
    x_all = (data['D'] - REFERENCE_DEFORMATION) / DEFORMATION_SCALE
    scale = data['F'].std()
    terms = monomials(2)
    values, slopes = polynomial_design(x_all, terms)
    gx = gradient * DEFORMATION_SCALE / scale
    errors, fitted = np.zeros(len(data['F'])), []
    for _, train, test in fold_splits(len(data['F']), folds, seed):
        n = len(train)
        design = np.concatenate([values[train], slopes[train].reshape(-1, len(terms))])
        y = np.concatenate([data['F'][train] / scale, gx[train].reshape(-1)])
        mean_coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
        residual = torch.as_tensor(y - design @ mean_coefficients)[:, None]
        x = torch.as_tensor(x_all[train])
        log_lengths = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        log_variance = torch.tensor(float(residual.square().mean().log()), dtype=torch.float64, requires_grad=True)
        log_noise = torch.tensor([-12.0, -8.0], dtype=torch.float64, requires_grad=True)  # F, g (variance, scaled)
        optimizer = torch.optim.Adam([log_lengths, log_variance, log_noise], lr=0.05)

        def factor():
            noise = torch.cat([log_noise[0].exp().expand(n), log_noise[1].exp().expand(6 * n)])
            return torch.linalg.cholesky(_gp_kernel(x, x, log_lengths.exp(), log_variance.exp()) + torch.diag(noise))

        for _ in range(iterations):
            optimizer.zero_grad()
            chol = factor()
            alpha = torch.cholesky_solve(residual, chol)
            loss = 0.5 * (residual * alpha).sum() + torch.log(torch.diagonal(chol)).sum()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            alpha = torch.cholesky_solve(residual, factor())
            cross = _gp_kernel(torch.as_tensor(x_all[test]), x, log_lengths.exp(), log_variance.exp())[: len(test)]
            predicted = (values[test] @ mean_coefficients + (cross @ alpha)[:, 0].numpy()) * scale
        errors[test] = errors_mha(predicted, data, test)
        noise_sd = (log_noise.detach().exp().sqrt() * torch.tensor([scale, 1.0])).numpy()
        fitted.append({'lengths': log_lengths.detach().exp().tolist(), 'noise_sd_F_mHa': float(1e3 * noise_sd[0])})
        print(f'GP fold: F MAE {errors[test].mean():.3f} mHa, lengths {np.round(fitted[-1]["lengths"], 2)}, '
              f'F noise sd {fitted[-1]["noise_sd_F_mHa"]:.3f} mHa', flush=True)
    return {'model': f'Gaussian process with gradient observations, {iterations} Adam steps', **summary(errors),
            'hyperparameters_per_fold': fitted}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('datasets', nargs='+', help='exported mg_strain datasets (.npz), same protocol; rows concatenated')
    parser.add_argument('--folds', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--settings', default='{}', help='FitSettings overrides of the PCA-MLP fit (JSON)')
    parser.add_argument('--gp', action='store_true', help='also the Gaussian-process baseline (minutes per fold)')
    parser.add_argument('--gp-iterations', type=int, default=80)
    parser.add_argument('--output', default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = read_exports(args.datasets)
    gradient = free_energy_gradient(data['D'], data['stress'])
    consistency = label_consistency(data, gradient)
    print('label consistency (trapezoid residual of F against the stress, mHa) by pair distance (units of σ):')
    for b in consistency['by_distance']:
        print(f'  {b["from"]:.1f}-{b["to"]:.1f}: {b["pairs"]:5d} pairs, median {b["median"]:.4f} mean {b["mean"]:.4f} '
              f'max {b["max"]:.3f}')
    fit = consistency['median_fit']
    print(f'  bin medians ≈ {fit["floor_mHa"]:.4f} + {fit["cubic_mHa"]:.4f} d³ mHa: a floor of the labels\' noise '
          f'of about {fit["floor_mHa"]:.3f} mHa in the residual of a pair')
    settings = json.loads(args.settings)
    curve, scaling = learning_curve(data, args.folds, args.seed, settings)
    print(f'MAE ∝ N^{scaling["exponent"]:.2f}; 0.05 mHa at ~{scaling["labels_for_0.05_mHa"]:.0f} training rows '
          'if that held')
    baselines = [polynomial_baseline(data, gradient, args.folds, args.seed, degree) for degree in (3, 4)]
    if args.gp:
        baselines.append(gp_baseline(data, gradient, args.folds, args.seed, args.gp_iterations))
    for b in baselines:
        print(f'{b["model"]}: F MAE {b["mae"]:.3f} median {b["median"]:.3f} max {b["max"]:.2f} mHa')
    result = {'data': f'mg_strain datasets {[pathlib.Path(p).name for p in args.datasets]}: {len(data["F"])} rows',
              'folds': args.folds, 'seed': args.seed, 'fit_settings': settings,
              'units': {'F': 'mHa per 4-atom cell', 'distance': '|D_b - D_a| / (0.05, 0.05, 0.05, 3°, 3°, 3°)'},
              'label_consistency': consistency, 'pcamlp_learning_curve': curve, 'pcamlp_scaling': scaling,
              'baselines': baselines, 'wall_seconds': time.perf_counter() - start, 'machine': machine()}
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1) + '\n')
    print(f'written to {args.output}')


if __name__ == '__main__':
    main()
