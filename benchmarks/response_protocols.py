"""Benchmark of the ABINIT response protocols (`test`, `fast`, `moderate`, `precise`) on BN and GaAs.

For every system and protocol it runs, through the package's own builder
(`AbinitResponseBaseWorkChain.get_builder_from_protocol` + `aiida.engine.run_get_node`):
  1. the equilibrium 2-atom cell with phonons on (P, ε∞, Z*, Γ force constants), and
  2. one displaced configuration (σ = 0.01 Å, seed 0, the package's displacement sampler) with the
     labelling defaults (P and ε∞): its time is the cost of one training label,
then prints a table and writes benchmarks/results/response_protocols.json: ε∞ (mean diagonal, largest
off-diagonal), Z* (cation scalar, largest deviation from ±scalar·I), ω_TO and ω_LO (cm^-1; LO from
physics.phonons with q̂ along x, and the mean over x, y, z), the gap on the k-grid (eV), the seconds per
configuration (wall of the AiiDA process, and ABINIT's own CPU time), and METHODS.md's physics checks.

Profile: the script uses the DEFAULT AiiDA profile with the `abinit@localhost` code and the pseudo
families, i.e. what `aiida-mlresponse setup` creates (run it first); the calculations stay in that
profile, with their provenance. Run (several minutes; `precise` GaAs alone takes longest):

    .venv/bin/python benchmarks/response_protocols.py                 # all protocols, both systems
    .venv/bin/python benchmarks/response_protocols.py --protocols test fast --systems BN

The machine is shared, so wall times depend on the load: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import platform
import re
import time

import numpy as np

RESULTS = pathlib.Path(__file__).parent / 'results' / 'response_protocols.json'
SYSTEMS = ('BN', 'GaAs')
PROTOCOLS = ('test', 'fast', 'moderate', 'precise')
SIGMA_ANGSTROM = 0.01
TOLERANCE = 1e-3  # METHODS.md: isotropy of ε∞ and Z* = ±scalar·I, relative
MAX_SENSIBLE_EPSILON = 50.0  # ε∞ of a gapped sp semiconductor; hundreds mean a (nearly) metallic grid


def cubic_point_group() -> np.ndarray:
    """The 48 Cartesian rotations (signed permutation matrices) of the cubic lattice."""
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs)):
                matrix[row, col] = sign
            ops.append(matrix)
    return np.array(ops)


def kgrid_keeps_symmetry(cell_angstrom, mesh, shifts) -> bool:
    """True when the k-point set (mesh + shifts, folded into the BZ) is mapped onto itself by every
    operation of the cubic point group. Works on the k-points themselves, so a single (½,½,½) shift
    in fcc primitive coordinates fails and the four-shift set or a Γ-centred mesh pass."""
    cell = np.asarray(cell_angstrom, dtype=float)
    mesh = np.asarray(mesh, dtype=int)
    points = np.array([
        (np.array(index) + np.asarray(shift)) / mesh
        for shift in shifts for index in itertools.product(*(range(n) for n in mesh))
    ])
    key = lambda reduced: {tuple(np.round((r - np.floor(r + 1e-9)) * 4 * mesh).astype(int) % (4 * mesh)) for r in reduced}  # noqa: E731
    reference = key(points)
    # k_cart = k_red @ B with B the reciprocal rows (2π dropped); a rotation R acts as k_red -> k_red B R^T B^-1.
    reciprocal = np.linalg.inv(cell).T
    for rotation in cubic_point_group():
        mapped = points @ reciprocal @ rotation.T @ np.linalg.inv(reciprocal)
        if key(mapped) != reference:
            return False
    return True


def abinit_cpu_seconds(node) -> float | None:
    """ABINIT's own CPU time, from the last line of the retrieved main output (timing only)."""
    try:
        text = node.outputs.retrieved.base.repository.get_object_content('aiida.abo')
    except Exception:  # noqa: BLE001
        return None
    found = re.findall(r'Overall time at end \(sec\) : cpu=\s*([\d.]+)', text)
    return float(found[-1]) if found else None


def last_calculation(workchain_node):
    from aiida.orm import CalcJobNode

    calcs = [n for n in workchain_node.called_descendants if isinstance(n, CalcJobNode)]
    return max(calcs, key=lambda n: n.ctime) if calcs else None


def run_protocol(code, structure, protocol, phonons):
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        code, structure, protocol=protocol, response={'phonons': phonons},
    )
    start = time.perf_counter()
    _, node = run_get_node(builder)
    wall = time.perf_counter() - start
    calc = last_calculation(node)
    return node, calc, wall, builder


def analyse_equilibrium(node, structure) -> dict:
    """ε∞, Z*, Γ phonons (with LO-TO) and the physics checks of one equilibrium run."""
    from aiida_mlresponse.physics.phonons import impose_acoustic_sum_rule_force_constants, lo_to_frequencies

    params = node.outputs.output_parameters.get_dict()
    arrays = node.outputs.output_arrays
    eps = arrays.get_array('dielectric_tensor')
    born = arrays.get_array('born_charges')
    born_raw = arrays.get_array('born_charges_raw')
    force_constants = arrays.get_array('force_constants_gamma')
    masses = [structure.get_kind(site.kind_name).mass for site in structure.sites]

    eps_mean = float(np.trace(eps) / 3)
    eps_off = float(np.abs(eps - np.diag(np.diag(eps))).max())
    eps_aniso = float(np.abs(eps - eps_mean * np.eye(3)).max() / eps_mean)
    scalar = float(np.trace(born[0]) / 3)  # cation (first atom)
    signs = np.array([1.0, -1.0])
    z_dev = float(max(np.abs(born[k] - signs[k] * scalar * np.eye(3)).max() for k in range(2)) / abs(scalar))
    fc = impose_acoustic_sum_rule_force_constants(force_constants)
    phonons = lo_to_frequencies(fc, masses, born, eps, params['volume'])
    raw_phonons = lo_to_frequencies(force_constants, masses, born, eps, params['volume'])
    gap = params.get('band_gap')
    return {
        'epsilon_mean_diagonal': eps_mean,
        'epsilon_max_off_diagonal': eps_off,
        'epsilon_max_relative_anisotropy': eps_aniso,
        'epsilon': eps.tolist(),
        'born_charge_cation': scalar,
        'born_charge_max_relative_deviation': z_dev,
        'born_charges': born.tolist(),
        'born_charges_asr_violation_raw_e': float(np.abs(born_raw.sum(axis=0)).max()),
        'born_charges_asr_violation_imposed_e': float(np.abs(born.sum(axis=0)).max()),
        'omega_to_cm1': float(phonons['to_cm1'].max()),
        'omega_lo_x_cm1': float(phonons['lo_cm1'][0]),
        'omega_lo_mean_cm1': phonons['lo_mean_cm1'],
        'acoustic_max_abs_cm1_before_asr': float(np.abs(raw_phonons['to_cm1'][:3]).max()),
        'band_gap_eV': gap,
    }


def checks(result, kgrid_ok) -> dict:
    """METHODS.md's physics checks, PASS/FAIL."""
    gap_ok = (result['band_gap_eV'] or 0) > 0 and (result.get('displaced_band_gap_eV', 1.0 if 'note' in result else 0.0) or 0) > 0
    return {
        'kgrid_symmetry': kgrid_ok,
        'epsilon_isotropic': result['epsilon_max_relative_anisotropy'] < TOLERANCE,
        'born_scalar': result['born_charge_max_relative_deviation'] < TOLERANCE,
        'acoustic_sum_rule': result['born_charges_asr_violation_imposed_e'] < 1e-8,
        'gapped': bool(gap_ok and result['epsilon_mean_diagonal'] < MAX_SENSIBLE_EPSILON),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--protocols', nargs='+', default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument('--systems', nargs='+', default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument('--output', type=pathlib.Path, default=RESULTS)
    parser.add_argument('--skip-displaced', action='store_true',
                        help='equilibrium only (no seconds per displaced configuration), for runs that do not fit')
    parser.add_argument('--print-only', action='store_true', help='print the table of the JSON file, run nothing')
    args = parser.parse_args()
    if args.print_only:
        print_table(json.loads(args.output.read_text())['results'])
        return

    from aiida import load_profile, orm

    profile = load_profile()
    try:
        code = orm.load_code('abinit@localhost')
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f'no `abinit@localhost` code in profile {profile.name}: run `aiida-mlresponse setup` first ({exc})')

    from aiida_mlresponse.abinit.protocols import RESPONSE_PROTOCOLS, get_protocol_inputs, kpoints_from_protocol
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics import crystals
    from aiida_mlresponse.sampling.displacements import sample_displacements

    machine = {'machine': platform.machine(), 'cores': os.cpu_count(), 'abinit': '9.6.2 (Debian)', 'profile': profile.name}
    rows = []
    for system, protocol in itertools.product(args.systems, args.protocols):
        cell, positions, symbols = {'BN': crystals.bn_cubic, 'GaAs': crystals.gaas}[system]()
        equilibrium = structure_from_arrays(cell, positions, symbols)
        displaced_positions = sample_displacements(positions, SIGMA_ANGSTROM, 1, seed=0)[0]
        displaced = structure_from_arrays(cell, displaced_positions, symbols)
        resolved = get_protocol_inputs(RESPONSE_PROTOCOLS, protocol, None, set(symbols))
        kpoints, settings = kpoints_from_protocol(equilibrium, resolved['kpoints'])
        mesh, offset = kpoints.get_kpoints_mesh()
        shifts = settings.get('kpoint_shifts', [offset])

        load = os.getloadavg()[0]
        node, calc, wall_eq, _ = run_protocol(code, equilibrium, protocol, phonons=True)
        row = {'system': system, 'protocol': protocol, 'ecut_Ha': resolved['parameters']['ecut'],
               'kpoints': {'mesh': list(mesh), 'shifts': resolved['kpoints'].get('shifts')},
               'pseudo_family': resolved['pseudo_family'], 'equilibrium_pk': node.pk,
               'equilibrium_exit_status': node.exit_status}
        if not node.is_finished_ok:
            row['error'] = f'equilibrium run failed: {node.exit_status} {node.exit_message}'
            print(f'{system} {protocol}: {row["error"]}', flush=True)
            rows.append(row)
            continue
        row.update(analyse_equilibrium(node, equilibrium))
        row['seconds_equilibrium_with_phonons'] = wall_eq
        row['abinit_cpu_seconds_equilibrium_with_phonons'] = abinit_cpu_seconds(calc)

        load = max(load, os.getloadavg()[0])
        if args.skip_displaced:
            node_d = None
            row['note'] = 'displaced configuration not run (--skip-displaced)'
        else:
            node_d, calc_d, wall_d, _ = run_protocol(code, displaced, protocol, phonons=False)
            row['displaced_pk'] = node_d.pk
        if node_d is None:
            pass
        elif node_d.is_finished_ok:
            params_d = node_d.outputs.output_parameters.get_dict()
            eps_d = node_d.outputs.output_arrays.get_array('dielectric_tensor')
            row['displaced_band_gap_eV'] = params_d.get('band_gap')
            row['displaced_epsilon_mean_diagonal'] = float(np.trace(eps_d) / 3)
            row['displaced_epsilon_max_off_diagonal'] = float(np.abs(eps_d - np.diag(np.diag(eps_d))).max())
            row['seconds_per_displaced_configuration'] = wall_d
            row['abinit_cpu_seconds_per_displaced_configuration'] = abinit_cpu_seconds(calc_d)
        else:
            row['error'] = f'displaced run failed: {node_d.exit_status} {node_d.exit_message}'
        row['load_average_1min_max'] = max(load, os.getloadavg()[0])
        row['checks'] = {name: 'PASS' if ok else 'FAIL' for name, ok in
                         checks(row, kgrid_keeps_symmetry(cell, mesh, shifts)).items()}
        rows.append(row)
        print(format_row(row), flush=True)
        write(args.output, machine, rows)

    write(args.output, machine, rows)
    print()
    print_table(json.loads(args.output.read_text())['results'])


UNITS = {
    'ecut_Ha': 'Ha', 'epsilon_mean_diagonal': 'dimensionless', 'epsilon_max_off_diagonal': 'dimensionless',
    'epsilon_max_relative_anisotropy': 'relative', 'born_charge_cation': 'e',
    'born_charge_max_relative_deviation': 'relative', 'born_charges_asr_violation_raw_e': 'e',
    'born_charges_asr_violation_imposed_e': 'e', 'omega_to_cm1': 'cm^-1', 'omega_lo_x_cm1': 'cm^-1',
    'omega_lo_mean_cm1': 'cm^-1', 'acoustic_max_abs_cm1_before_asr': 'cm^-1', 'band_gap_eV': 'eV',
    'displaced_band_gap_eV': 'eV', 'seconds_equilibrium_with_phonons': 's (wall, AiiDA process)',
    'abinit_cpu_seconds_equilibrium_with_phonons': 's (ABINIT cpu)',
    'seconds_per_displaced_configuration': 's (wall, AiiDA process, P + ε∞)',
    'abinit_cpu_seconds_per_displaced_configuration': 's (ABINIT cpu, P + ε∞)',
    'displaced_epsilon_mean_diagonal': 'dimensionless', 'displaced_epsilon_max_off_diagonal': 'dimensionless',
}


def write(path, machine, rows):
    """Write the results, keeping rows of (system, protocol) pairs this run did not redo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {(row['system'], row['protocol']) for row in rows}
    previous = json.loads(path.read_text())['results'] if path.is_file() else []
    rows = [row for row in previous if (row['system'], row['protocol']) not in done] + list(rows)
    rows.sort(key=lambda row: (SYSTEMS.index(row['system']), PROTOCOLS.index(row['protocol'])))
    document = {
        'description': 'ABINIT response protocols on equilibrium BN and GaAs (benchmarks/response_protocols.py)',
        'machine': machine, 'units': UNITS, 'sigma_displacement_angstrom': SIGMA_ANGSTROM,
        'check_tolerance_relative': TOLERANCE, 'results': rows,
    }
    path.write_text(json.dumps(document, indent=1) + '\n')


HEADER = (f'{"system":6s} {"protocol":9s} {"ε∞ diag":>8s} {"ε∞ off":>8s} {"Z* cat":>7s} {"Z* dev":>8s} '
          f'{"|ΣZ*|raw":>8s} {"ω_TO":>7s} {"ω_LO(x)":>8s} {"gap eV":>7s} {"s/disp":>7s} {"cpu/disp":>8s}  checks (k-sym, ε iso, Z* scalar, ASR, gapped)')


def format_row(row) -> str:
    if 'epsilon_mean_diagonal' not in row:
        return f'{row["system"]:6s} {row["protocol"]:9s} {row.get("error", "")}'
    seconds = row.get('seconds_per_displaced_configuration')
    cpu = row.get('abinit_cpu_seconds_per_displaced_configuration')
    checks_text = ' '.join(row['checks'].values())
    return (f'{row["system"]:6s} {row["protocol"]:9s} {row["epsilon_mean_diagonal"]:8.4f} '
            f'{row["epsilon_max_off_diagonal"]:8.1e} {row["born_charge_cation"]:7.4f} '
            f'{row["born_charge_max_relative_deviation"]:8.1e} {row["born_charges_asr_violation_raw_e"]:8.1e} {row["omega_to_cm1"]:7.1f} {row["omega_lo_x_cm1"]:8.1f} '
            f'{row["band_gap_eV"]:7.3f} {seconds if seconds is None else round(seconds, 1)!s:>7s} '
            f'{cpu!s:>8s}  {checks_text}')


def print_table(rows):
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print('Z* dev: largest |Z*_κ - (±scalar)·I| / scalar; |ΣZ*|raw: acoustic sum rule violation before imposing it (e); '
          'gap: on the k-grid (eV)')
    print('ω in cm^-1 (LO with q̂ along x); s/disp: wall seconds of one displaced configuration (P + ε∞) '
          'through AiiDA; cpu/disp: ABINIT CPU seconds of it.')


if __name__ == '__main__':
    main()
