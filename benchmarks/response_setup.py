"""The physics set-up of the GaAs and BN response labels: lattice, gap at Γ, ε∞ against the k-grid.

Runs ABINIT through the package's own `AbinitResponseCalculation` (serial, on the DEFAULT AiiDA profile
with `abinit@localhost` and the pseudo families of `aiida-mlresponse setup`) with the protocols'
potentials (LDA PseudoDojo 0.4: large-core Ga/As, standard B/N), and writes
benchmarks/results/response_setup.json:

  1. E(a): 5 cubic lattice constants at the `fast` settings (cutoff and k-grid of the `fast` protocol),
     ground state only; the minimum of a cubic fit is the `relaxed` lattice of physics.crystals.
  2. Gaps at the paper's (PBE) lattice and at the relaxed one, `fast` settings: band_gap_grid (the
     four-shift grid alone, what the old check saw), direct_gap_gamma and band_gap (grid + Γ and the
     other time-reversal-invariant points: what the parser checks now), and whether ERROR_NO_GAP fired.
  3. ε∞ (mean diagonal) against the four-shift k-grid at the `fast` cutoff, at both lattices, with the
     wall and ABINIT CPU seconds of each run (P + ε∞, the labelling default).

    .venv/bin/python benchmarks/response_setup.py      # ABINIT CPU ~9 min; ~40 min wall on the loaded machine
    .venv/bin/python benchmarks/response_setup.py --systems GaAs --grids 2 4

Run it niced (`nice -n 10`) on a shared machine; the load average is recorded with the times.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import time

import numpy as np

RESULTS = pathlib.Path(__file__).parent / 'results' / 'response_setup.json'
SCAN_BOHR = {'GaAs': (-0.2, -0.1, 0.0, 0.1, 0.2), 'BN': (-0.12, -0.06, 0.0, 0.06, 0.12)}  # around `relaxed`
VERSIONS = set()  # ABINIT versions printed by the runs
# four-shift meshes of the ε∞ scan, per system and lattice (the paper lattice only to show the contrast)
GRIDS = {'GaAs': {'paper': (2, 4), 'relaxed': (2, 4, 6)}, 'BN': {'paper': (2,), 'relaxed': (2, 4)}}


def run(system: str, a_bohr: float, mesh: int, response: dict) -> dict:
    """One AbinitResponseCalculation at the `fast` protocol with a four-shift mesh^3 grid; parsed numbers."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics import crystals
    from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM
    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

    make = {'GaAs': crystals.gaas, 'BN': crystals.bn_cubic}[system]
    structure = structure_from_arrays(*make(a_bohr * BOHR_TO_ANGSTROM))
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        orm.load_code('abinit@localhost'), structure, protocol='fast',
        overrides={'kpoints': {'mesh': [mesh] * 3, 'shifts': 'fcc4'}}, response=response)
    start = time.time()
    results, node = run_get_node(AbinitResponseCalculation, **dict(builder.abinit))
    wall = time.time() - start
    params = results['output_parameters'].get_dict()
    text = node.outputs.retrieved.base.repository.get_object_content('aiida.abo')
    VERSIONS.update(re.findall(r'\.Version\s+(\S+)', text))
    # ABINIT's own times (those of the run that produced the result, also when AiiDA's cache reused it)
    times = re.search(r'Proc\.\s+0 individual time \(sec\): cpu=\s*([\d.]+)\s+wall=\s*([\d.]+)', text)
    row = {
        'a_bohr': round(a_bohr, 4), 'kgrid': f'fcc4 {mesh}x{mesh}x{mesh}', 'ecut_ha': builder.abinit.parameters['ecut'],
        'exit_status': node.exit_status, 'total_energy_ha': params['total_energy'],
        'abinit_cpu_s': float(times.group(1)), 'abinit_wall_s': float(times.group(2)),
        'aiida_wall_s': None if node.base.caching.get_cache_source() else round(wall, 1),  # None: cached
    }
    for key in ('band_gap_grid', 'direct_gap_gamma', 'band_gap'):
        if key in params:
            row[f'{key}_ev'] = round(params[key], 4)
    if 'output_arrays' in results and 'dielectric_tensor' in results['output_arrays'].get_arraynames():
        eps = results['output_arrays'].get_array('dielectric_tensor')
        row['eps_inf_mean_diagonal'] = round(float(np.trace(eps) / 3), 4)
    print(system, row, flush=True)
    return row


def relaxed_lattice(system: str) -> dict:
    from aiida_mlresponse.abinit.protocols import get_protocol_inputs
    from aiida_mlresponse.physics.crystals import LATTICE_BOHR

    elements = {'GaAs': ['Ga', 'As'], 'BN': ['B', 'N']}[system]
    mesh = get_protocol_inputs(protocol='fast', elements=elements)['kpoints']['mesh'][0]
    centre = LATTICE_BOHR[system]['relaxed']
    ground_state = {'polarization': True, 'dielectric': False}
    rows = [run(system, centre + delta, mesh, ground_state) for delta in SCAN_BOHR[system]]
    a = np.array([row['a_bohr'] for row in rows])
    energy = np.array([row['total_energy_ha'] for row in rows])
    fit = np.polyfit(a, energy, 3)
    roots = [r.real for r in np.roots(np.polyder(fit)) if abs(r.imag) < 1e-12 and a.min() <= r.real <= a.max()]
    minimum = [r for r in roots if np.polyval(np.polyder(fit, 2), r) > 0]
    return {'scan': [{key: row[key] for key in ('a_bohr', 'total_energy_ha', 'band_gap_ev')} for row in rows],
            'a_min_bohr': round(float(minimum[0]), 4) if minimum else None,
            'settings': f'fast protocol: ecut {rows[0]["ecut_ha"]} Ha, {rows[0]["kgrid"]}, cubic fit of E(a)'}


def main(argv=None):
    from aiida import load_profile

    from aiida_mlresponse.physics.crystals import LATTICE_BOHR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--systems', nargs='+', default=['GaAs', 'BN'], choices=['GaAs', 'BN'])
    parser.add_argument('--grids', nargs='+', type=int, help='four-shift meshes of the ε∞ scan (default per system)')
    args = parser.parse_args(argv)
    load_profile()
    import aiida

    # Each system's entry replaces the one already in the file: the systems may be run one at a time.
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result = {
        'description': __doc__.split('\n\n')[0],
        'units': {'a_bohr': 'Bohr', 'total_energy_ha': 'Ha', '*_ev': 'eV', 'abinit_cpu_s': 's (ABINIT CPU)',
                  'abinit_wall_s': 's (ABINIT wall)', 'aiida_wall_s': 's (AiiDA process wall; null: reused from cache)',
                  'eps_inf_mean_diagonal': 'dimensionless'},
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'load_average_start': os.getloadavg(),
                    'note': 'shared 2-core machine: wall times include the load of other jobs; ABINIT serial, niced'},
        'abinit_version': None, 'aiida_version': aiida.__version__,
        'potentials': {'GaAs': 'PseudoDojo 0.4 LDA (PW) SR largecore psp8: Ga-low (3 e), As (5 e)',
                       'BN': 'PseudoDojo 0.4 LDA (PW) SR standard psp8: B (3 e), N (5 e)'},
        'systems': previous.get('systems', {}),
    }
    for system in args.systems:
        entry = {'lattice_recorded_bohr': LATTICE_BOHR[system], 'relaxation': relaxed_lattice(system),
                 'load_average_start': os.getloadavg()}
        for name, a_bohr in (('paper', LATTICE_BOHR[system]['paper']), ('relaxed', LATTICE_BOHR[system]['relaxed'])):
            entry[f'eps_inf_vs_kgrid_{name}'] = [
                run(system, a_bohr, mesh, {'polarization': True, 'dielectric': True})
                for mesh in (args.grids or GRIDS[system][name])
            ]
        result['systems'][system] = entry
    result['abinit_version'] = ', '.join(sorted(VERSIONS))
    result['machine']['load_average_end'] = os.getloadavg()
    RESULTS.write_text(json.dumps(result, indent=1) + '\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
