"""Mg labels: how much k-point sampling noise the free energy and -TS carry, per k-mesh.

Along a smooth path (λb from 0.97 to 1.03, the rest of D at the reference), the exact F(λb) and
-TS(λb) are smooth; what a coarse k-mesh adds is jagged. Per mesh this relaxes every point at the
`fast` cutoff and grid (MgRelaxBaseWorkChain, one ABINIT process at a time) and reports the RMS
residual of F, U and -TS about a cubic fit in λb (the label noise a model cannot learn) and the
difference to the densest mesh. Writes benchmarks/results/mg_kmesh_noise.json.

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mg_kmesh_noise.py --meshes 4,3,3 6,4,4 8,6,6

Across random 6-D deformations (`--random mg.npz`, an exported `fast` mg_strain dataset): the first `--count`
configurations are relaxed again on `--mesh` (one `LabelsWorkChain`, its dataset node on record), and the
difference Δ = F(mesh) - F(fast) per configuration is split into a part linear in D (a smooth offset any model
absorbs) and the rest: the RMS of the rest (degrees of freedom counted) bounds the label noise of the `fast`
labels a model cannot learn, to compare with a model's test error.

    nice -n 15 .venv/bin/python benchmarks/mg_kmesh_noise.py --random mg.npz --count 24 --mesh 6,4,4
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'mg_kmesh_noise.json'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meshes', nargs='+', default=['4,3,3', '6,4,4', '8,6,6'])
    parser.add_argument('--points', type=int, default=7)
    parser.add_argument('--profile', default='mlresponse')
    parser.add_argument('--random', default=None, help='exported fast mg_strain dataset (.npz): random-deformation mode')
    parser.add_argument('--count', type=int, default=24)
    parser.add_argument('--mesh', default='6,4,4')
    args = parser.parse_args()

    from aiida import load_profile, orm
    from aiida.engine import run_get_node

    load_profile(args.profile)
    if args.random:
        return random_deformations(args)
    from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

    code = orm.load_code('abinit@localhost')
    lambdas = np.linspace(0.97, 1.03, args.points)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data.update({'path': 'λb from 0.97 to 1.03, other D at the reference (1, 1, 1, 90, 90, 90)', 'lambda_b': lambdas.tolist(),
                 'protocol': 'fast (ecut, ngfft, tolerances) with the k-mesh replaced', 'units': 'mHa per 4-atom cell'})
    runs = data.setdefault('runs', {})
    for mesh in args.meshes:
        entry = runs.setdefault(mesh, {'points': {}})
        for index, lam in enumerate(lambdas):
            if str(index) in entry['points']:
                continue
            deformation = np.array([1.0, lam, 1.0, 90.0, 90.0, 90.0])
            overrides = {'kpoints': {'mesh': [int(n) for n in mesh.split(',')]}}
            start = time.time()
            results, node = run_get_node(MgRelaxBaseWorkChain.get_builder_from_protocol(
                code, deformation=deformation, protocol='fast', overrides=overrides))
            row = {'seconds': time.time() - start, 'pk': node.pk, 'exit_status': node.exit_status}
            if node.is_finished_ok:
                out = results['output_parameters'].get_dict()
                row.update({key: out[key] * 1e3 for key in ('free_energy', 'band_energy', 'entropy_energy')})
            entry['points'][str(index)] = row
            print(f'mesh {mesh} λb {lam:.3f} {row["seconds"]:6.1f} s  F {row.get("free_energy")} mHa', flush=True)
            RESULTS.write_text(json.dumps(data, indent=1))
    summarize(data, lambdas)
    data['load_average'] = os.getloadavg()
    RESULTS.write_text(json.dumps(data, indent=1))


def random_deformations(args):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mlresponse.data.schema import read_npz
    from aiida_mlresponse.workflows.labels import LabelsWorkChain

    if args.count < 10:
        raise SystemExit('--count: at least 10 configurations (a linear fit in D takes 7 parameters).')
    _, fast, _ = read_npz(args.random)
    rows = np.argsort(fast['configuration_index'])[: args.count]
    configurations = orm.ArrayData()
    configurations.set_array('deformations', fast['deformation'][rows])
    configurations.set_array('configuration_index', fast['configuration_index'][rows])
    mesh = [int(n) for n in args.mesh.split(',')]
    start = time.time()
    results, node = run_get_node(LabelsWorkChain.get_builder_from_protocol(
        orm.load_code('abinit@localhost'), configurations, 'mg_strain', protocol='fast',
        overrides={'kpoints': {'mesh': mesh}}, max_concurrent=1))
    dense = results['dataset']
    index = dense.get_array('configuration_index').tolist()
    kept = [r for r in rows if int(fast['configuration_index'][r]) in index]
    order = [index.index(int(fast['configuration_index'][r])) for r in kept]
    d = fast['deformation'][kept]
    entry = {'dataset': str(pathlib.Path(args.random).name), 'mesh': mesh, 'labels_workchain': node.uuid,
             'dense_dataset': dense.uuid, 'configurations': len(kept), 'seconds': time.time() - start,
             'units': 'mHa per 4-atom cell; stress GPa'}
    design = np.concatenate([np.ones((len(d), 1)), d], axis=1)  # linear in D: 7 parameters
    for key, name in (('free_energy', 'F'), ('band_energy', 'U'), ('entropy_energy', 'minus_TS')):
        delta = 1e3 * (dense.get_array(key)[order] - fast[key][kept])
        residual = delta - design @ np.linalg.lstsq(design, delta, rcond=None)[0]
        entry[name] = {'delta_mean_mHa': float(delta.mean()), 'delta_std_mHa': float(delta.std(ddof=1)),
                       'residual_rms_after_linear_in_D_mHa': float(np.sqrt((residual ** 2).sum() / (len(d) - 7)))}
    from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA

    stress = HA_PER_BOHR3_TO_GPA * (dense.get_array('stress')[order] - fast['stress'][kept])
    entry['stress'] = {'delta_mae_GPa': float(np.abs(stress).mean()), 'delta_max_GPa': float(np.abs(stress).max())}
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data['random_deformations'] = entry
    RESULTS.write_text(json.dumps(data, indent=1))
    print(json.dumps(entry, indent=1))


def summarize(data, lambdas):
    runs = data['runs']
    densest = max(runs, key=lambda mesh: np.prod([int(n) for n in mesh.split(',')]))
    summary = data['summary'] = {'densest_mesh': densest}
    print(f'\n{"mesh":>8s} {"s/point":>8s} {"F jag":>8s} {"U jag":>8s} {"-TS jag":>8s} {"|dF| vs densest":>16s} {"|d(-TS)|":>9s}   (mHa; jag = RMS residual about a cubic in λb)')
    for mesh, entry in runs.items():
        points = [entry['points'].get(str(i), {}) for i in range(len(lambdas))]
        if not all('free_energy' in p for p in points):
            continue
        line = {'seconds_per_point': float(np.mean([p['seconds'] for p in points]))}
        for key, name in (('free_energy', 'F'), ('band_energy', 'U'), ('entropy_energy', 'minus_TS')):
            values = np.array([p[key] for p in points])
            residual = values - np.polyval(np.polyfit(lambdas, values, 3), lambdas)
            line[f'{name}_jagged_rms_mHa'] = float(np.sqrt(np.mean(residual ** 2) * len(values) / (len(values) - 4)))
            reference = np.array([runs[densest]['points'][str(i)][key] for i in range(len(lambdas))])
            difference = values - reference
            line[f'{name}_vs_densest_offset_free_max_mHa'] = float(np.abs(difference - difference.mean()).max())
        summary[mesh] = line
        print(f'{mesh:>8s} {line["seconds_per_point"]:8.1f} {line["F_jagged_rms_mHa"]:8.4f} {line["U_jagged_rms_mHa"]:8.4f} '
              f'{line["minus_TS_jagged_rms_mHa"]:8.4f} {line["F_vs_densest_offset_free_max_mHa"]:16.4f} '
              f'{line["minus_TS_vs_densest_offset_free_max_mHa"]:9.4f}')


if __name__ == '__main__':
    main()
