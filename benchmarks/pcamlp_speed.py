"""Evaluation speed of the PCA-MLP committee on CPU, per deformation, batched (seed 002: 2 ms each).

    nice -n 10 .venv/bin/python benchmarks/pcamlp_speed.py [--threads 1 2]

1. The hardware: achieved GFLOP/s of a large float32 matmul (2048^3) and of the field layer's batched
   product (K*4 x B x 500 x 500), at each thread count.
2. The FLOPs of the architecture per deformation and member (heads 6-50-100-50-n for F, U, -TS, R;
   fields 6-H-H-50 for each of rho, phi, u, s) and the flop-bound floor = FLOPs / achieved GFLOP/s.
3. `predict` timings (committee mean and spread, numpy out) for K = 1 and 5, field MLPs 2 x 500 (the
   seed's) and narrower 2 x 256, 2 x 128: outputs 'F' (the F head alone), 'scalars' (F, U, -TS, R),
   'scalars+coefficients' (those + the 4 x 50 PCA coefficients of the fields, mean and spread), and
   'full_fields' (reconstructed on the Mg `fast` grid 20x32x32, without spread) at a batch of 100;
   the batch (and `predict`'s chunk size) swept; also the stress σ = (1/V) ∂F/∂ε by autograd (float64).
Weights are random: the cost of a forward pass does not depend on their values. Best of several
repeats. Writes benchmarks/results/pcamlp_speed.json.
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

from aiida_mlresponse.ml.pcamlp.model import DEFAULT_FIELDS, PCAMLPCommittee, default_hyperparameters
from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_deformations
from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.strain import deformation_to_strain

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
TARGET_US = 20.0
SEED_US = 2000.0
HEADS = {'F': 1, 'U': 1, 'minus_TS': 1, 'R': 3}
FAST_GRID = (20, 32, 32)


def committee(k: int, field_hidden, grid=FAST_GRID) -> PCAMLPCommittee:
    hyper = default_hyperparameters(n_members=k, field_shape=list(grid), field_hidden=list(field_hidden),
                                       pca_dims={name: 50 for name in DEFAULT_FIELDS}, heads=dict(HEADS))
    model = PCAMLPCommittee(hyper)
    n_points = int(np.prod(grid))
    with torch.no_grad():
        for name in DEFAULT_FIELDS:
            getattr(model, f'{name}_pca_components').copy_(torch.linalg.qr(torch.randn(n_points, 50))[0].T)
        model.input_mean.copy_(torch.tensor([1.0, 1.0, 1.0, 90.0, 90.0, 90.0]))
        model.input_std.copy_(torch.tensor([0.025, 0.025, 0.025, 3.0, 3.0, 3.0]))
    return model.eval()


def previous_committee(commit: str, k: int, model: PCAMLPCommittee):
    """The PCAMLPCommittee of an earlier commit (one stacked net per head and per field) with `model`'s weights."""
    import importlib.util
    import subprocess

    source = subprocess.run(['git', 'show', f'{commit}:aiida_mlresponse/ml/pcamlp.py'], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader('aiida_mlresponse.ml._pcamlp_previous', loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f'{commit}:pcamlp.py', 'exec'), module.__dict__)
    hyper = {key: value for key, value in model.hyperparameters.items() if key != 'layout'}
    old = module.PCAMLPCommittee(hyper).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if hasattr(old, name):
                getattr(old, name).copy_(buffer)
        for i, (name, n) in enumerate(zip(model.head_names, model.head_sizes)):
            for mine, theirs in zip(model.scalar_net.parameters(), old.heads[name].parameters()):
                theirs.copy_(mine[i * k:(i + 1) * k, :, :theirs.shape[2]])
            getattr(old, f'{name}_mean').copy_(model.scalar_mean[i, :n])
            getattr(old, f'{name}_std').copy_(model.scalar_std[i, :n])
        for i, (name, d) in enumerate(zip(model.field_names, model.field_dims)):
            for mine, theirs in zip(model.field_net.parameters(), old.field_nets[name].parameters()):
                theirs.copy_(mine[i * k:(i + 1) * k, :, :theirs.shape[2]])
            getattr(old, f'{name}_coef_mean').copy_(model.coef_mean[i, :d])
            getattr(old, f'{name}_coef_std').copy_(model.coef_std[i, :d])
    return old


def mlp_flops(sizes) -> int:
    """Multiply-adds x 2 of one MLP evaluation (biases and tanh not counted)."""
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops_per_member(field_hidden, with_fields: bool = True) -> int:
    flops = sum(mlp_flops([6, 50, 100, 50, n]) for n in HEADS.values())
    if with_fields:
        flops += len(DEFAULT_FIELDS) * mlp_flops([6, *field_hidden, 50])
    return flops


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


def hardware(repeats: int) -> dict:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    h, w = torch.randn(20, 256, 500), torch.randn(20, 500, 500)
    with torch.inference_mode():
        matmul = best_time(lambda: a @ b, repeats)
        bmm = best_time(lambda: torch.bmm(h, w), repeats)
        tanh = best_time(lambda: torch.tanh(h), repeats)
    return {'sgemm_2048_gflops': 2 * 2048**3 / matmul / 1e9,
            'bmm_20x256x500x500_gflops': 2 * 20 * 256 * 500 * 500 / bmm / 1e9,
            'tanh_ns_per_element': 1e9 * tanh / h.numel()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 32, 256, 1024, 4096])
    parser.add_argument('--widths', type=int, nargs='+', default=[500, 256, 128])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--previous', default='c34e8ac',
                        help='commit whose PCAMLPCommittee (one net per head and per field) is timed side by side')
    args = parser.parse_args()
    load_start = os.getloadavg()
    d_all = synthetic_deformations(max(args.batches), seed=1)
    rows, machine = [], {}

    def record(threads, k, width, batch, outputs, seconds, chunk=None):
        us = 1e6 * seconds / batch
        rows.append({'threads': threads, 'members': k, 'field_hidden': [width, width], 'batch': batch,
                     'chunk_size': chunk, 'outputs': outputs, 'us_per_deformation': us})
        print(f'threads {threads} K={k} fields 2x{width} batch={batch:5d} chunk={chunk} {outputs:22s} '
              f'{us:9.2f} us/deformation', flush=True)

    previous = {}
    if args.previous:  # the same weights through the earlier code, interleaved so both see the same load
        torch.set_num_threads(1)
        d = torch.as_tensor(d_all[:1024], dtype=torch.float32)
        for k in (1, 5):
            model = committee(k, (500, 500))
            old = previous_committee(args.previous, k, model)
            new_out, old_out = (m.predict(d, fields=False, coefficients=True) for m in (model, old))
            agreement = max(float(np.abs(new_out[key] - old_out[key]).max() / (np.abs(old_out[key]).max() + 1e-30))
                            for key in old_out)
            for outputs, kw in (('scalars', {'fields': False}), ('scalars+coefficients', {'fields': False, 'coefficients': True})):
                times = {}
                for _ in range(args.repeats):
                    for label, m in (('previous', old), ('this', model)):
                        with torch.inference_mode():
                            t = best_time(lambda: m.predict(d, **kw), 1)
                        times[label] = min(times.get(label, float('inf')), t)
                previous[f'K{k}_{outputs}'] = {
                    'previous_us': 1e6 * times['previous'] / len(d), 'this_us': 1e6 * times['this'] / len(d),
                    'speedup': times['previous'] / times['this'], 'max_relative_difference_of_outputs': agreement}
                print(f'K={k} {outputs:22s} batch 1024, 1 thread: previous ({args.previous}) '
                      f'{1e6 * times["previous"] / len(d):.2f} us, this {1e6 * times["this"] / len(d):.2f} us, '
                      f'speedup {times["previous"] / times["this"]:.2f}; outputs agree to {agreement:.1e}', flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        machine[threads] = hardware(args.repeats)
        print(f'threads {threads}:', json.dumps(machine[threads]), flush=True)
        for k in (1, 5):
            for width in args.widths:
                model = committee(k, (width, width))
                for batch in args.batches:
                    d = torch.as_tensor(d_all[:batch], dtype=torch.float32)
                    cases = {'F': lambda: model.free_energy(d),
                             'scalars': lambda: model.predict(d, fields=False),
                             'scalars+coefficients': lambda: model.predict(d, fields=False, coefficients=True)}
                    if width != args.widths[0]:
                        cases.pop('F'), cases.pop('scalars')  # no field nets in them: the same as the first width
                    for outputs, fn in cases.items():
                        with torch.inference_mode():
                            record(threads, k, width, batch, outputs, best_time(fn, args.repeats))
                # predict's chunk size, on a large batch
                d = torch.as_tensor(d_all, dtype=torch.float32)
                for chunk in (64, 128, 512, 1024, len(d)):
                    record(threads, k, width, len(d), 'scalars+coefficients', best_time(
                        lambda: model.predict(d, fields=False, coefficients=True, chunk_size=chunk), args.repeats), chunk)
                if width == args.widths[0]:
                    d = torch.as_tensor(d_all[:100], dtype=torch.float32)
                    record(threads, k, width, 100, 'full_fields (20x32x32)',
                           best_time(lambda: model.predict(d, fields=True, field_spread=False), args.repeats))
                    model64 = committee(k, (width, width)).double()
                    strains = deformation_to_strain(d_all[:1000])
                    record(threads, k, width, 1000, 'stress (autograd, f64)',
                           best_time(lambda: st.stress(model64.free_energy, strains), args.repeats))

    def best(outputs, k, width, threads=None):
        values = [r['us_per_deformation'] for r in rows if r['outputs'] == outputs and r['members'] == k
                  and r['field_hidden'][0] == width and (threads is None or r['threads'] == threads)]
        return min(values) if values else None

    flops, summary = {}, {}
    for width in args.widths:
        flops[f'2x{width}'] = {'scalars_per_member': flops_per_member((width, width), with_fields=False),
                               'scalars+coefficients_per_member': flops_per_member((width, width))}
    for threads in args.threads:
        gflops = machine[threads]['sgemm_2048_gflops']
        for k in (1, 5):
            for width in args.widths:
                w = f'2x{width}'
                for outputs in ('F', 'scalars', 'scalars+coefficients'):
                    us = best(outputs, k, width, threads)
                    if us is None:
                        continue
                    key = f'threads{threads}_K{k}_{outputs}' + ('' if outputs != 'scalars+coefficients' else f'_fields{w}')
                    per_member = flops[w]['scalars+coefficients_per_member' if outputs == 'scalars+coefficients'
                                          else 'scalars_per_member']
                    floor = k * per_member / (gflops * 1e3)
                    summary[key] = {'us_per_deformation': us, 'ratio_to_20us_target': us / TARGET_US,
                                    'speedup_vs_seed_2ms': SEED_US / us,
                                    'flop_bound_floor_us': floor if outputs != 'F' else None,
                                    'achieved_gflops': k * per_member / (us * 1e3) if outputs != 'F' else None}
    for key, value in summary.items():
        text = ', '.join(f'{k} {v:.3g}' for k, v in value.items() if v is not None)
        print(f'{key:50s} {text}')
    result = {
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared '
                   f'with other jobs (load average {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} '
                   f'at the end), torch {torch.__version__}, CPU float32',
        'load_average_start_end': [load_start, os.getloadavg()],
        'outputs': {'F': 'committee-mean free energy only (the F head)',
                    'scalars': 'mean and spread of F, U, -TS and R (3)',
                    'scalars+coefficients': 'scalars + mean and spread of the 50 PCA coefficients of rho, phi, u, s',
                    'full_fields (20x32x32)': 'scalars + the 4 reconstructed mean fields on the fast grid, no spread',
                    'stress (autograd, f64)': 'sigma = (1/V) dF/d(eps) of the committee mean, float64'},
        'units': 'microseconds per deformation, best over repeats and batches, batched',
        'target_us': TARGET_US, 'seed_paper_us': SEED_US,
        'hardware': machine, 'flops_per_deformation_per_member': flops,
        'summary': summary, 'previous_code_same_weights': previous, 'previous_commit': args.previous, 'rows': rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'pcamlp_speed.json').write_text(json.dumps(result, indent=1))
    print('wrote', RESULTS / 'pcamlp_speed.json')


if __name__ == '__main__':
    main()
