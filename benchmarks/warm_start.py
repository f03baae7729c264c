"""Warm start against cold training of the PCA-MLP committee, on the labels of a strained-Mg campaign.

    nice -n 10 .venv/bin/python benchmarks/warm_start.py --data mg56.npz [--round1 40] [--folds 4]

`--data`: an 'mg_strain' dataset file (`aiida-mlresponse dataset export PK FILE`) of an active-learning campaign,
configurations in labelling order. It mimics the campaign's round 1 -> 2 under cross-validation: in each of
`--folds` folds the fold's rows are held out as the test set; the parent (round 1) is a cold fit on the
training rows among the first `--round1` labels, and on all the training rows (round 2) it compares

- `seed_schedule`: the full counts of `FitSettings` without early stopping (`patience=None`, the previous default),
- `cold`: the defaults (early stopping on the validation plateau),
- `warm`: the defaults, warm-started from the parent (`fit_pcamlp(parent=...)`, the `warm_*` schedule),

by CPU seconds of the fit (`time.process_time`, all threads; the parent's own fit not counted) and the test
errors: F MAE and max (mHa), the Cauchy stress against ABINIT's (GPa), ρ NRMSE (%), the mean position error of R.
`--threads-probe` first times 50 L-BFGS iterations per head of the scalar nets at 1 and 2 torch threads
(`FitSettings.threads`). Writes benchmarks/results/warm_start.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time

import numpy as np

from aiida_mlresponse.ml.pcamlp.data import read_dataset
from aiida_mlresponse.ml.pcamlp.fit import fit_pcamlp
from aiida_mlresponse.ml.pcamlp.metrics import nrmse, position_error
from aiida_mlresponse.ml.pcamlp.model import DEFAULT_FIELDS, DEFAULT_HEADS
from aiida_mlresponse.ml.pcamlp.training_loop import FitSettings
from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
SCHEDULES = {'seed_schedule': FitSettings(patience=None), 'cold': FitSettings(), 'warm': FitSettings()}


def fit(data, rows, settings: FitSettings, parent=None):
    scalars = {name: data[name][rows] for name in DEFAULT_HEADS}
    fields = {name: data[name][rows] for name in DEFAULT_FIELDS}
    return fit_pcamlp(data['D'][rows], scalars, fields, stress=data['stress'][rows], settings=settings, parent=parent)


def test_errors(model, data, rows) -> dict:
    pred = model.predict(data['D'][rows], fields=['rho'], field_spread=False)
    f_error = 1e3 * np.abs(pred['F'][:, 0] - data['F'][rows])
    sigma = st.cauchy_stress(model.double().free_energy, data['D'][rows])
    model.float()
    stress_error = HA_PER_BOHR3_TO_GPA * np.abs(sigma - data['stress'][rows])
    return {'F_mae_mHa': float(f_error.mean()), 'F_max_mHa': float(f_error.max()),
            'stress_mae_GPa': float(stress_error.mean()), 'stress_max_GPa': float(stress_error.max()),
            'rho_nrmse_percent': float(100 * nrmse(pred['rho'], data['rho'][rows]).mean()),
            'R_position_error_mean_bohr': float(position_error(pred['R'], data['R'][rows], data['cell'][rows]).mean())}


def stage_counts(history) -> dict:
    return {stage: {'cpu_seconds': history[stage]['cpu_seconds'], 'epochs_run': history[stage]['epochs_run'],
                    'lbfgs_iterations': history[stage]['lbfgs_iterations_per_group']}
            for stage in ('scalars', 'fields')}


def threads_probe(data, rows) -> list:
    """CPU and wall seconds of the scalar nets' L-BFGS (50 iterations per head) at 1 and 2 torch threads."""
    out = []
    for threads in (1, 2):
        settings = FitSettings(epochs=0, lbfgs_iterations=50, field_epochs=0, field_lbfgs_iterations=0,
                               patience=None, threads=threads)
        _, history = fit(data, rows, settings)
        out.append({'threads': threads, 'cpu_seconds': history['scalars']['cpu_seconds'],
                    'wall_seconds': history['scalars']['seconds'], 'load_average': os.getloadavg()[0]})
        print(f'threads probe: {out[-1]}', flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, help='an mg_strain dataset file of an active-learning campaign')
    parser.add_argument('--round1', type=int, default=40, help='labels of round 1 (the first rows)')
    parser.add_argument('--folds', type=int, default=4)
    parser.add_argument('--run-folds', type=int, default=None, help='run only the first this many folds (time)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads-probe', action='store_true')
    parser.add_argument('--out', default=str(RESULTS / 'warm_start.json'))
    args = parser.parse_args(argv)
    data = read_dataset(args.data)
    n = len(data['D'])
    order = np.argsort(data['configuration_index'], kind='stable')  # labelling order
    folds = np.array_split(np.random.default_rng(args.seed).permutation(n), args.folds)
    probe = threads_probe(data, np.arange(n)) if args.threads_probe else None
    rows = []
    for f, test in enumerate(folds[:args.run_folds]):
        train = np.setdiff1d(np.arange(n), test)
        round1 = np.intersect1d(train, order[:args.round1])
        parent, parent_history = fit(data, round1, FitSettings())
        row = {'fold': f, 'n_test': int(len(test)), 'n_round1': int(len(round1)), 'n_train': int(len(train)),
               'parent_cpu_seconds': parent_history['train_cpu_seconds'], 'parent': test_errors(parent, data, test)}
        for name, settings in SCHEDULES.items():
            model, history = fit(data, train, settings, parent if name == 'warm' else None)
            row[name] = {'cpu_seconds': history['train_cpu_seconds'], 'wall_seconds': history['train_seconds'],
                         'stages': stage_counts(history), **test_errors(model, data, test)}
            print(f'fold {f} {name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in row[name].items() if k != 'stages'),
                  flush=True)
        rows.append(row)
        result = write(args, data, rows, probe)
    for name, values in result['summary_mean_over_folds'].items():
        print(f'{name:14s} ' + ', '.join(f'{k} {v:.4g}' for k, v in values.items()))
    print('wrote', args.out)


def write(args, data, rows, probe) -> dict:
    """The results of the folds run so far, written to `args.out` (a long run leaves what it has)."""
    summary = {name: {key: float(np.mean([row[name][key] for row in rows])) for key in rows[0][name] if key != 'stages'}
               for name in SCHEDULES}
    for name in SCHEDULES:
        summary[name]['F_max_mHa'] = float(max(row[name]['F_max_mHa'] for row in rows))
    result = {
        'description': __doc__.split('\n\n')[1].strip(),
        'data': f'{pathlib.Path(args.data).name}: {len(data["D"])} labels of a strained-Mg campaign (ABINIT `fast`)',
        'settings': {'round1': args.round1, 'folds': args.folds, 'folds_run': len(rows), 'seed': args.seed,
                     'fit_settings': dataclasses.asdict(FitSettings())},
        'summary_mean_over_folds': summary,
        'summary_note': 'means over the folds; F_max_mHa is the largest over all folds',
        'folds': rows,
        'load_average_at_end': os.getloadavg()[0],
        **({'threads_probe': probe} if probe else {}),
    }
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == '__main__':
    main()
