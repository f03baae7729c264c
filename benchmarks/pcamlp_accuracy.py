"""Accuracy of the PCA-MLP committee on held-out strained-Mg configurations (seed 002 comparison).

    nice -n 10 .venv/bin/python benchmarks/pcamlp_accuracy.py                   # Mg campaign data
    nice -n 10 .venv/bin/python benchmarks/pcamlp_accuracy.py --train-sizes 250 500 --test-size 500 --test-rest
    nice -n 10 .venv/bin/python benchmarks/pcamlp_accuracy.py --synthetic 1500  # analytic stand-in

The Mg data are read from an 'mg_strain' dataset file (`aiida-mlresponse dataset export PK FILE`, checked
against `aiida_mlresponse.data.schema`), --data, by default runs/mg_fast/mg_strain.npz. A training size runs only if
at least --test-size configurations remain for the test set; skipped sizes are listed in the JSON.

For each training size: MAE and max of F, U, -TS (mHa; direct heads, and U, -TS also from the integrated
predicted fields), NRMSE of ρ, φ, u, s (per configuration, mean and median), the PCA-only NRMSE, the
position error (Bohr), the same for the seed's linear-regression baseline, the training time, and the
committee spread against the error. The F head is trained on ABINIT's stress too (--stress-weight, 0 for
values only). Also the model's Cauchy stress of each test cell (`physics.stress.cauchy_stress`) against
ABINIT's, and uniaxial stress-strain curves with the committee band. Writes
benchmarks/results/pcamlp_accuracy.json (or pcamlp_accuracy_synthetic.json) and PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import time

import numpy as np
import torch

from aiida_mlresponse.ml.pcamlp import plots
from aiida_mlresponse.ml.pcamlp.data import read_dataset
from aiida_mlresponse.ml.pcamlp.fit import FitSettings, fit_pcamlp
from aiida_mlresponse.ml.pcamlp.linear import LinearBaseline
from aiida_mlresponse.ml.pcamlp.metrics import nrmse, position_error
from aiida_mlresponse.ml.pcamlp.model import DEFAULT_FIELDS, default_hyperparameters
from aiida_mlresponse.ml.pcamlp.pca import pca_project, pca_reconstruct
from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset
from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
MG_DATA = ROOT / 'runs' / 'mg_fast' / 'mg_strain.npz'  # aiida-mlresponse dataset export PK FILE
TSMEAR = 0.01  # Ha, the smearing of the Mg protocols: -TS = tsmear * ∫s
SEED_PAPER = {  # seed 002, 2000 training configurations, 1000 test
    'F_mae_mHa': 0.10, 'F_max_mHa': 1.5, 'U_mae_mHa': 0.15, 'U_max_mHa': 2.4,
    'minus_TS_mae_mHa': 0.014, 'minus_TS_max_mHa': 0.13,
    'nrmse_rho_phi_u_percent': 0.1, 'nrmse_s_percent': 11.0, 'position_error_bohr': 0.0035,
}
SCALARS = ('F', 'U', 'minus_TS', 'R')
# the training defaults live in `FitSettings`; the benchmark's options start from them
FIT = dataclasses.asdict(FitSettings())


def integrals(fields: dict, volume: np.ndarray) -> dict:
    """U = ∫u and -TS = tsmear ∫s on the fixed grid (sum × V / n_points)."""
    out = {}
    if 'u' in fields:
        u = np.asarray(fields['u'], dtype=np.float64)
        out['U'] = u.reshape(len(u), -1).mean(1) * volume
    if 's' in fields:
        s = np.asarray(fields['s'], dtype=np.float64)
        out['minus_TS'] = TSMEAR * s.reshape(len(s), -1).mean(1) * volume
    return out


def energy_errors(pred: dict, true: dict, prefix: str = '') -> dict:
    out = {}
    for key in ('F', 'U', 'minus_TS'):
        if key in pred:
            err = 1e3 * np.abs(np.ravel(pred[key]) - np.ravel(true[key]))
            out[f'{prefix}{key}_mae_mHa'] = float(err.mean())
            out[f'{prefix}{key}_max_mHa'] = float(err.max())
    return out


def field_errors(pred: dict, true: dict, names, prefix: str = '') -> tuple[dict, dict]:
    out, per_config = {}, {}
    for name in names:
        values = nrmse(pred[name], true[name])
        per_config[name] = values
        out[f'{prefix}nrmse_{name}_mean_percent'] = float(100 * values.mean())
        out[f'{prefix}nrmse_{name}_median_percent'] = float(100 * np.median(values))
    return out, per_config


def evaluate(args, data, train, test, fields_names, label):
    d_train, d_test = data['D'][train], data['D'][test]
    scalars = {k: data[k][train] for k in SCALARS}
    fields = {k: data[k][train] for k in fields_names}
    truth = {k: data[k][test] for k in (*SCALARS, *fields_names)}
    torch.manual_seed(args.seed)
    settings = FitSettings(
        epochs=args.epochs, lbfgs_iterations=args.lbfgs, field_epochs=args.field_epochs,
        field_lbfgs_iterations=args.field_lbfgs, batch_size=args.batch_size, field_batch_size=args.field_batch_size,
        l2=args.l2, refit_output=not args.no_refit, seed=args.seed, stress_weight=args.stress_weight, log_every=100)
    model, history = fit_pcamlp(
        d_train, scalars, fields,
        {'n_members': args.members, 'pca_components': args.pca, 'coefficient_scaling': args.coefficient_scaling,
         'field_hidden': args.field_hidden},
        stress=data['stress'][train] if 'stress' in data else None, settings=settings,
        log=print if args.verbose else None)
    t0 = time.perf_counter()
    pred = model.predict(d_test, coefficients=True)
    predict_seconds = time.perf_counter() - t0
    row = {'n_train': int(len(d_train)), 'n_test': int(len(d_test)), 'train_seconds': history['train_seconds'],
           'train_cpu_seconds': history.get('train_cpu_seconds'), 'pca_cpu_seconds': history.get('pca_cpu_seconds'),
           'pca_seconds': history['pca_seconds'],
           'scalar_train_seconds': history['scalars']['seconds'],
           'field_train_seconds': history.get('fields', {}).get('seconds'),
           'scalar_train_cpu_seconds': history['scalars'].get('cpu_seconds'),
           'field_train_cpu_seconds': history.get('fields', {}).get('cpu_seconds'),
           'train_seconds_by_stage': {stage: {key: history[stage].get(key) for key in
                                              ('seconds', 'cpu_seconds', 'adam_seconds', 'lbfgs_seconds',
                                               'epochs_run', 'lbfgs_iterations')}
                                      for stage in ('scalars', 'fields') if stage in history},
           'load_average_after_training': os.getloadavg(),
           'predict_seconds_test_set': predict_seconds,
           'pca_dims': model.hyperparameters['pca_dims'],
           'pca_explained_variance': history['pca_explained_variance']}
    row.update(energy_errors(pred, truth))
    row.update(energy_errors(integrals(pred, data['volume'][test]), truth, prefix='from_fields_'))
    # the labels' own consistency: integrated DFT fields against the DFT energies
    row.update(energy_errors(integrals(truth, data['volume'][test]), truth, prefix='dft_fields_vs_dft_'))
    errors, per_config = field_errors(pred, truth, fields_names)
    row.update(errors)
    pca_pred = {}
    for name in fields_names:
        mean = model._buffer(f'{name}_pca_mean').numpy()
        comps = model._buffer(f'{name}_pca_components').numpy()
        pca_pred[name] = pca_reconstruct(pca_project(truth[name], mean, comps), mean, comps).reshape(
            truth[name].shape)
    pca_errors, pca_per_config = field_errors(pca_pred, truth, fields_names, prefix='pca_only_')
    row.update(pca_errors)
    pos = position_error(pred['R'], truth['R'], data['cell'][test])
    row['position_error_mean_bohr'] = float(pos.mean())
    row['position_error_max_bohr'] = float(pos.max())
    row['R_displacement_mean_bohr'] = float(position_error(truth['R'], 0 * truth['R'], data['cell'][test]).mean())
    f_err = np.abs(pred['F'][:, 0] - truth['F'])
    row['F_committee_std_mean_mHa'] = float(1e3 * pred['F_std'].mean())
    row['F_spread_error_spearman'] = float(_spearman(pred['F_std'][:, 0], f_err))
    # linear baseline of the seed
    linear = LinearBaseline().fit(d_train, scalars, fields, pca_components=args.pca)
    lin = linear.predict(d_test)
    lin_row = energy_errors(lin, truth)
    lin_row.update(field_errors(lin, truth, fields_names)[0])
    lin_pos = position_error(lin['R'], truth['R'], data['cell'][test])
    lin_row['position_error_mean_bohr'] = float(lin_pos.mean())
    row['linear_baseline'] = lin_row
    # stress against ABINIT's, where the data have it: the exact Cauchy stress of each deformed cell
    if 'stress' in data and not args.no_stress:
        model64 = model.double()
        sigma = st.cauchy_stress(model64.free_energy, d_test[: args.stress_configs])
        dft = data['stress'][test][: args.stress_configs]
        diff = HA_PER_BOHR3_TO_GPA * np.abs(sigma - dft)
        row['stress_vs_dft_mae_GPa'] = float(diff.mean())
        row['stress_vs_dft_max_GPa'] = float(diff.max())
        row['stress_dft_mean_abs_GPa'] = float(HA_PER_BOHR3_TO_GPA * np.abs(dft).mean())
        row['stress_configs'] = int(len(sigma))
        model = model64.float()
    extras = {'pred': pred, 'truth': truth, 'per_config': per_config, 'pca_per_config': pca_per_config,
              'model': model, 'history': history}
    return row, extras


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def stress_curves(model, steps: int, label: str, out_png):
    model64 = model.double()
    curves = []
    for axis in range(3):
        applied = np.linspace(0.0, -0.1 if axis == 1 else -0.06, steps)
        path = st.uniaxial_path(model64.free_energy, axis, applied, gtol=1e-10, max_iter=3000)
        with torch.no_grad():
            r = model64.head_members('R', torch.as_tensor(path.deformation)).mean(0).numpy()
        members = []
        for k in range(model64.n_members):
            sig = st.stress(lambda d, k=k: model64.head_members('F', d)[k, :, 0],
                            np.stack([st.voigt_to_tensor(torch.as_tensor(v)).numpy() for v in path.strain]))
            members.append(sig[:, axis, axis])
        found = st.detect_instability(path, r)
        keep = np.where(path.in_domain, 1.0, np.nan)  # no stress is shown where the model extrapolates
        curves.append({'axis': axis, 'applied': path.applied.tolist(), 'sigma': (keep * path.sigma).tolist(),
                       'sigma_std': np.std(members, axis=0).tolist(),
                       'transverse': (keep[:, None] * path.transverse).tolist(),
                       'in_domain': path.in_domain.tolist(),
                       'min_hessian_eigenvalue_Ha': path.min_eigenvalue.tolist(),
                       'tangent_stiffness_GPa': (HA_PER_BOHR3_TO_GPA * np.diff(path.sigma) / np.diff(path.applied)).tolist(),
                       'converged': path.converged.tolist(), 'R': r.tolist(),
                       'unstable_at': found.applied, 'instability_reason': found.reason})
    plots.stress_strain(curves, out_png, title=label)
    model64.float()
    return curves


COMPARED = ('train_seconds', 'train_cpu_seconds', 'pca_cpu_seconds', 'scalar_train_cpu_seconds', 'field_train_cpu_seconds',
            'F_mae_mHa', 'F_max_mHa', 'U_mae_mHa', 'U_max_mHa', 'minus_TS_mae_mHa', 'minus_TS_max_mHa',
            'nrmse_rho_mean_percent', 'nrmse_phi_mean_percent', 'nrmse_u_mean_percent', 'nrmse_s_mean_percent',
            'pca_only_nrmse_rho_mean_percent', 'position_error_mean_bohr', 'position_error_max_bohr',
            'F_committee_std_mean_mHa', 'F_spread_error_spearman')


def compare(other: dict, this: dict) -> dict:
    """Side by side, per training size: the other run's value, this run's, and this / other."""
    out = {}
    for row in this['rows']:
        old = next((r for r in other['rows'] if r['n_train'] == row['n_train']), None)
        if old is None:
            continue
        table = {key: {'other': old.get(key), 'this': row.get(key),
                       'this_over_other': row[key] / old[key] if old.get(key) and row.get(key) is not None else None}
                 for key in COMPARED if key in row or key in old}
        out[str(row['n_train'])] = table
        print(f'n_train {row["n_train"]}: {"":32s} {"other":>12s} {"this":>12s} {"this/other":>10s}')
        for key, v in table.items():
            fmt = lambda x: f'{x:12.5g}' if isinstance(x, (int, float)) else f'{str(x):>12s}'  # noqa: E731
            ratio = f'{v["this_over_other"]:10.3f}' if v['this_over_other'] is not None else ''
            print(f'  {key:40s} {fmt(v["other"])} {fmt(v["this"])} {ratio}')
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=str(MG_DATA))
    parser.add_argument('--synthetic', type=int, default=0, help='use N analytic configurations (NOT Mg)')
    parser.add_argument('--train-sizes', type=int, nargs='+', default=[250, 500, 1000, 2000])
    parser.add_argument('--test-size', type=int, default=500, help='the fewest test configurations accepted')
    parser.add_argument('--test-rest', action='store_true',
                        help='test on every configuration outside the largest training set (not only --test-size)')
    parser.add_argument('--members', type=int, default=5)
    parser.add_argument('--pca', type=float, default=50)
    parser.add_argument('--coefficient-scaling', default='field', choices=['field', 'component'])
    parser.add_argument('--epochs', type=int, default=FIT['epochs'])
    parser.add_argument('--lbfgs', type=int, default=FIT['lbfgs_iterations'])
    parser.add_argument('--field-epochs', type=int, default=FIT['field_epochs'])
    parser.add_argument('--field-lbfgs', type=int, default=FIT['field_lbfgs_iterations'])
    parser.add_argument('--batch-size', type=int, default=FIT['batch_size'])
    parser.add_argument('--field-batch-size', type=int, default=None)
    parser.add_argument('--field-hidden', type=int, nargs='+', default=default_hyperparameters()['field_hidden'])
    parser.add_argument('--no-refit', action='store_true', help='no ridge refit of the output layers')
    parser.add_argument('--l2', type=float, default=FIT['l2'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--stress-configs', type=int, default=None, help='test configurations for the stress check (all)')
    parser.add_argument('--stress-weight', type=float, default=1.0,
                        help="weight of ABINIT's stress in the F head's loss (0: fit the values only)")
    parser.add_argument('--stress-steps', type=int, default=21)
    parser.add_argument('--no-stress', action='store_true')
    parser.add_argument('--tag', default='')
    parser.add_argument('--results-dir', default=str(RESULTS), help='where the JSON and plots go')
    parser.add_argument('--compare-with', default=None,
                        help="a JSON written by this script (e.g. earlier settings): printed side by side")
    parser.add_argument('--compare-files', nargs=2, metavar=('OTHER', 'THIS'), default=None,
                        help='no training: print two JSONs of this script side by side, store it in THIS')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args()
    args.pca = int(args.pca) if args.pca >= 1 else args.pca
    if args.compare_files:
        other, this = (pathlib.Path(p) for p in args.compare_files)
        result = json.loads(this.read_text())
        result['comparison'] = compare(json.loads(other.read_text()), result)
        result['comparison']['other'] = str(other)
        this.write_text(json.dumps(result, indent=1))
        return
    torch.set_num_threads(args.threads)

    if args.synthetic:
        data = synthetic_dataset(args.synthetic, grid=(20, 32, 32), seed=2024)
        from aiida_mlresponse.physics.strain import cell_volume, deformation_to_cell

        data['cell'] = deformation_to_cell(data['D'])
        data['volume'] = cell_volume(data['cell'])
        source = f'SYNTHETIC analytic stand-in ({args.synthetic} configurations) - NOT Mg, NOT DFT'
        stem = 'pcamlp_accuracy_synthetic'
    else:
        data = read_dataset(args.data)
        source = f'Mg, ABINIT `fast` protocol campaign ({pathlib.Path(args.data).name}, {len(data["D"])} configurations)'
        stem = 'pcamlp_accuracy'
    stem += f'_{args.tag.lstrip("_")}' if args.tag else ''
    fields_names = [name for name in DEFAULT_FIELDS if name in data]
    n = len(data['D'])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(n)
    # a training size is run only if at least --test-size configurations are left for the test set
    sizes = [s for s in args.train_sizes if n - s >= args.test_size]
    skipped = {str(s): f'{n} configurations leave {n - s} < {args.test_size} for the test set'
               for s in args.train_sizes if s not in sizes}
    if sizes:
        n_test = n - max(sizes) if args.test_rest else args.test_size
    else:  # too few configurations for any asked size: half and half, flagged in the JSON
        sizes, n_test = [n // 2], n - n // 2
        skipped['fallback'] = f'no asked training size fits; trained on {n // 2}, tested on {n_test}'
    test = order[:n_test]
    print(f'data: {source}; test set {n_test} configurations; training sizes {sizes}; skipped {skipped}')
    rows, extras = [], None
    for size in sizes:
        train = order[n_test:n_test + size]
        row, extras = evaluate(args, data, train, test, fields_names, source)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}, indent=None))
        print('  linear baseline:', json.dumps(row['linear_baseline']))
    label = f'{source}; n_train {rows[-1]["n_train"]}, n_test {n_test}, K={args.members}'
    results = pathlib.Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    pngs = {
        'parity': plots.parity(extras['truth'], {k: extras['pred'][k][:, 0] for k in ('F', 'U', 'minus_TS')},
                               results / f'{stem}_parity.png',
                               spread={k: extras['pred'][f'{k}_std'][:, 0] for k in ('F', 'U', 'minus_TS')},
                               title=label),
        'nrmse': plots.nrmse_histograms(extras['per_config'], results / f'{stem}_nrmse.png',
                                        pca_only=extras['pca_per_config'], title=label),
        'field_slice': plots.field_slice({k: extras['truth'][k][0] for k in fields_names},
                                         {k: extras['pred'][k][0] for k in fields_names},
                                         results / f'{stem}_field_slice.png', plane=0, axis=2,
                                         title=f'{label}; test configuration 0, plane x3 = 0'),
    }
    curves = None
    if not args.no_stress:
        curves = stress_curves(extras['model'], args.stress_steps, label, results / f'{stem}_stress_strain.png')
        pngs['stress_strain'] = results / f'{stem}_stress_strain.png'
        for c in curves:
            print(f'uniaxial x{c["axis"] + 1}: instability {c["unstable_at"]} ({c["instability_reason"]}); '
                  f'min Hessian eigenvalue along path {min(c["min_hessian_eigenvalue_Ha"]):.3g} Ha')
    result = {
        'data': source, 'is_mg_dft': not args.synthetic,
        'machine': f'{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores '
                   f'shared with other jobs (load average {os.getloadavg()[0]:.2f} at the end), '
                   f'torch threads {args.threads}, CPU',
        'settings': {k: v for k, v in vars(args).items() if k not in ('data', 'results_dir')},  # no machine paths
        'units': 'energies mHa per 4-atom cell, NRMSE percent (RMSE / range of the truth, per configuration), '
                 'positions Bohr, stress GPa, times s',
        'n_configurations_available': int(n), 'n_test': int(n_test), 'train_sizes_run': sizes,
        'train_sizes_skipped': skipped,
        'seed_paper': SEED_PAPER, 'target': {'F_mae_mHa': 0.05, 'max_train': 1000},
        'rows': rows, 'uniaxial_paths': curves, 'plots': [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in pngs.values()],
    }
    if args.compare_with:
        result['comparison'] = compare(json.loads(pathlib.Path(args.compare_with).read_text()), result)
        result['comparison']['other'] = args.compare_with
    path = results / f'{stem}.json'
    path.write_text(json.dumps(result, indent=1))
    print('wrote', path)


if __name__ == '__main__':
    main()
