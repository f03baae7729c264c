"""Mg protocols: seconds per configuration and energy/stress differences against a reference protocol.

For three seeded deformations (sample_deformations(3, seed=11)) every protocol asked for relaxes the
cell with MgRelaxBaseWorkChain, one ABINIT process at a time, in the profile (default `mlresponse`).
Per protocol the JSON holds the wall seconds per configuration, F, U, -TS (Ha/cell), the stress
(Ha/Bohr³) and R, and against the reference protocol (`precise` by default):
  - F difference: raw (includes the constant offset between different pseudopotentials) and with the
    mean offset over the three cells removed (what a model trained on these labels sees);
  - U and -TS differences, the largest stress-component difference (GPa), the largest R difference.
Resumable: finished (protocol, deformation) pairs are kept in the JSON and skipped. `--start-from
moderate` starts each relaxation from the R that protocol found (precise then needs fewer BFGS steps).

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mg_protocols.py --protocols test fast moderate precise
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np

from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'mg_protocols.json'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocols', nargs='+', default=['test', 'fast', 'moderate', 'precise'])
    parser.add_argument('--reference', default='precise')
    parser.add_argument('--profile', default='mlresponse')
    parser.add_argument('--code', default='abinit@localhost')
    parser.add_argument('--seed', type=int, default=11)
    parser.add_argument('--start-from', help='start each relaxation from the R this protocol found (saves BFGS steps)')
    args = parser.parse_args()

    from aiida import load_profile, orm
    from aiida.engine import run_get_node

    load_profile(args.profile)
    from aiida_mlresponse.abinit.mg import install_seed_family, mg_structure
    from aiida_mlresponse.sampling.deformations import sample_deformations
    from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

    install_seed_family()
    deformations = sample_deformations(3, seed=args.seed)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data.update({'deformations': deformations.tolist(), 'seed': args.seed, 'machine': platform.node(),
                 'note': 'wall seconds on a shared 2-core machine (other jobs running), one ABINIT process, nice 15'})
    runs = data.setdefault('runs', {})
    code = orm.load_code(args.code)

    for protocol in args.protocols:
        entry = runs.setdefault(protocol, {'settings': MgRelaxBaseWorkChain.get_protocol_inputs(protocol), 'configurations': {}})
        for index, deformation in enumerate(deformations):
            if str(index) in entry['configurations']:
                continue
            start_row = runs.get(args.start_from, {}).get('configurations', {}).get(str(index), {})
            if 'R' in start_row:
                structure = mg_structure(deformation, r_params=start_row['R'])
                builder = MgRelaxBaseWorkChain.get_builder_from_protocol(code, structure=structure, protocol=protocol)
            else:
                builder = MgRelaxBaseWorkChain.get_builder_from_protocol(code, deformation=deformation, protocol=protocol)
            start = time.time()
            results, node = run_get_node(builder)
            seconds = time.time() - start
            row = {'seconds': seconds, 'pk': node.pk, 'exit_status': node.exit_status,
                   'started_from': args.start_from if 'R' in start_row else 'R = 0'}
            if node.is_finished_ok:
                out = results['output_parameters'].get_dict()
                row.update({key: out[key] for key in ('free_energy', 'band_energy', 'entropy_energy', 'R', 'relaxation_steps')})
                row['stress'] = results['output_arrays'].get_array('stress').tolist()
            entry['configurations'][str(index)] = row
            print(f'{protocol:9s} {index}  {seconds:8.1f} s  exit {node.exit_status}  F {row.get("free_energy")}', flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(data, indent=1))

    summarize(data, args.reference)
    RESULTS.write_text(json.dumps(data, indent=1))


def summarize(data: dict, reference: str) -> None:
    runs = data['runs']
    summary = data['summary'] = {'reference': reference}
    ref = runs.get(reference, {}).get('configurations', {})
    print(f'\n{"protocol":9s} {"s/config":>9s} {"dF raw":>12s} {"dF offset-free":>15s} {"dU":>10s} {"d(-TS)":>10s} {"dstress GPa":>12s} {"dR":>9s}')
    for protocol, entry in runs.items():
        rows = entry['configurations']
        ok = {key: row for key, row in rows.items() if 'free_energy' in row}
        line = {'seconds_per_configuration': float(np.mean([row['seconds'] for row in rows.values()])) if rows else None,
                'configurations_ok': len(ok)}
        common = sorted(set(ok) & {key for key, row in ref.items() if 'free_energy' in row})
        if common and protocol != reference:
            diff = lambda name: np.array([ok[k][name] - ref[k][name] for k in common])  # noqa: E731
            dF = diff('free_energy')
            line.update({
                'compared_configurations': len(common),
                'free_energy_max_abs_difference_Ha': float(np.abs(dF).max()),
                'free_energy_offset_free_max_abs_difference_Ha': float(np.abs(dF - dF.mean()).max()),
                'band_energy_max_abs_difference_Ha': float(np.abs(diff('band_energy')).max()),
                'entropy_energy_max_abs_difference_Ha': float(np.abs(diff('entropy_energy')).max()),
                'stress_max_abs_difference_GPa': float(max(
                    np.abs(np.array(ok[k]['stress']) - np.array(ref[k]['stress'])).max() for k in common) * HA_PER_BOHR3_TO_GPA),
                'R_max_abs_difference': float(max(np.abs(np.array(ok[k]['R']) - np.array(ref[k]['R'])).max() for k in common)),
            })
        summary[protocol] = line
        fmt = lambda key, spec: format(line[key], spec) if key in line else '-'  # noqa: E731
        seconds = line['seconds_per_configuration']
        print(f'{protocol:9s} {seconds if seconds is None else round(seconds, 1)!s:>9s} {fmt("free_energy_max_abs_difference_Ha", ".2e"):>12s} '
              f'{fmt("free_energy_offset_free_max_abs_difference_Ha", ".2e"):>15s} {fmt("band_energy_max_abs_difference_Ha", ".2e"):>10s} '
              f'{fmt("entropy_energy_max_abs_difference_Ha", ".2e"):>10s} {fmt("stress_max_abs_difference_GPa", ".3f"):>12s} '
              f'{fmt("R_max_abs_difference", ".1e"):>9s}')


if __name__ == '__main__':
    main()
