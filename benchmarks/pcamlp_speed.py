"""Evaluation speed of the PCA-MLP committee on CPU, per deformation, batched (seed 002: 2 ms each).

    nice -n 10 .venv/bin/python benchmarks/pcamlp_speed.py [--threads 1]

Times, for committees of K = 1 and K = 5 with the seed's architecture (heads 50-100-50 for F, U, -TS
and R; 500-500 nets for 50 PCA coefficients of each of 4 fields): the free energy alone, all scalars,
scalars + field PCA coefficients, and full fields on the Mg `fast` grid (20x32x32) and on the seed's
grid (36x64x60); also the stress σ = (1/V) ∂F/∂ε by autograd. Weights are random: the cost of a
forward pass does not depend on their values. Best of several repeats; writes
benchmarks/results/pcamlp_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np
import torch

from aiida_mlresponse.ml import pcamlp as pm
from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.strain import deformation_to_strain

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
TARGET_US = 20.0
SEED_US = 2000.0


def committee(k: int, grid) -> pm.PCAMLPCommittee:
    hyper = pm.default_hyperparameters(n_members=k, field_shape=list(grid),
                                       pca_dims={name: 50 for name in pm.DEFAULT_FIELDS},
                                       heads={'F': 1, 'U': 1, 'minus_TS': 1, 'R': 3})
    model = pm.PCAMLPCommittee(hyper)
    n_points = int(np.prod(grid))
    with torch.no_grad():
        for name in pm.DEFAULT_FIELDS:
            comps = torch.linalg.qr(torch.randn(n_points, 50))[0].T
            getattr(model, f'{name}_pca_components').copy_(comps)
        model.input_mean.copy_(torch.tensor([1.0, 1.0, 1.0, 90.0, 90.0, 90.0]))
        model.input_std.copy_(torch.tensor([0.025, 0.025, 0.025, 3.0, 3.0, 3.0]))
    return model.eval()


def best_time(fn, repeats: int, min_seconds: float = 0.2) -> float:
    fn()  # warm-up
    best = float('inf')
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed > min_seconds:
                break
        best = min(best, elapsed / n)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 100, 1000, 10000])
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d_all = pm.sample_deformations(max(args.batches), seed=1)
    rows = []
    for k in (1, 5):
        for grid in ((20, 32, 32), (36, 64, 60)):
            model = committee(k, grid)
            for batch in args.batches:
                d = torch.as_tensor(d_all[:batch], dtype=torch.float32)
                cases = {
                    'F': lambda: model.free_energy(d),
                    'scalars': lambda: model.predict(d, fields=False),
                    'scalars+coefficients': lambda: model.predict(d, fields=False, coefficients=True),
                }
                if batch * int(np.prod(grid)) * (k + 2) * 4 < 3e9:  # memory of the full fields
                    cases['full_fields'] = lambda: model.predict(d, fields=True, field_spread=False)
                    cases['full_fields+spread'] = lambda: model.predict(d, fields=True)
                for name, fn in cases.items():
                    if name in ('F', 'scalars', 'scalars+coefficients') and grid != (20, 32, 32):
                        continue  # independent of the grid
                    with torch.no_grad():
                        seconds = best_time(fn, args.repeats)
                    rows.append({'members': k, 'grid': list(grid), 'batch': batch, 'outputs': name,
                                 'us_per_deformation': 1e6 * seconds / batch})
                    print(f'K={k} grid={grid} batch={batch:6d} {name:22s} '
                          f'{1e6 * seconds / batch:10.2f} us/deformation')
            if grid == (20, 32, 32):
                model64 = model.double()
                for batch in args.batches:
                    strains = deformation_to_strain(d_all[:batch])
                    seconds = best_time(lambda: st.stress(model64.free_energy, strains), args.repeats)
                    rows.append({'members': k, 'grid': None, 'batch': batch, 'outputs': 'stress (autograd, float64)',
                                 'us_per_deformation': 1e6 * seconds / batch})
                    print(f'K={k} batch={batch:6d} stress (autograd, f64)  {1e6 * seconds / batch:10.2f} us/deformation')

    def best(outputs, k, grid=None):
        values = [r['us_per_deformation'] for r in rows if r['outputs'] == outputs and r['members'] == k
                  and (grid is None or r['grid'] == list(grid))]
        return min(values) if values else None

    summary = {}
    for k in (1, 5):
        for outputs in ('F', 'scalars', 'scalars+coefficients'):
            summary[f'K{k}_{outputs}_us'] = best(outputs, k)
        for outputs in ('full_fields', 'full_fields+spread'):
            summary[f'K{k}_{outputs}_fast_grid_us'] = best(outputs, k, (20, 32, 32))
            summary[f'K{k}_{outputs}_seed_grid_us'] = best(outputs, k, (36, 64, 60))
        summary[f'K{k}_stress_us'] = best('stress (autograd, float64)', k)
    summary['ratio_to_target_K5_scalars+coefficients'] = summary['K5_scalars+coefficients_us'] / TARGET_US
    summary['speedup_vs_seed_K1_full_fields_seed_grid'] = SEED_US / summary['K1_full_fields_seed_grid_us']
    summary['ratio_to_target_K5_F'] = summary['K5_F_us'] / TARGET_US
    summary['ratio_to_target_K5_scalars'] = summary['K5_scalars_us'] / TARGET_US
    for key, value in summary.items():
        print(f'{key:45s} {value:.3f}')
    result = {
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores '
                   f'(shared with other jobs; load average {os.getloadavg()[0]:.1f} at the end), '
                   f'torch {torch.__version__}, {args.threads} thread(s), CPU float32',
        'units': 'microseconds per deformation, best over repeats, batched',
        'target_us': TARGET_US, 'seed_paper_us': SEED_US, 'summary': summary, 'rows': rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'pcamlp_speed.json').write_text(json.dumps(result, indent=1))
    print('wrote', RESULTS / 'pcamlp_speed.json')


if __name__ == '__main__':
    main()
