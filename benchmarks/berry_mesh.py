"""Born charges by two DFT routes and the k-mesh of the Berry phase: why the P labels need `polarization_mesh_factor`.

The committees learn Berry-phase P; its finite-difference Z* = Ω ΔP/Δτ is what their autograd Z* reproduces. The
Raman work chain's DFT reference takes Z* from DFPT. For each system this runs, through the package's
`AbinitResponseBaseWorkChain` at one protocol:

  1. the equilibrium cell with phonons (DFPT Z* per atom as ABINIT gives it, and with the acoustic sum rule imposed),
  2. the cation moved by ±h along x, P only, with `kpoints.polarization_mesh_factor` f: the Berry phase on the
     protocol's mesh N and on f·N, and their extrapolation to a dense mesh (`physics.polarization.extrapolate_k_mesh`),

and prints Z*_xx of the cation by each route. Writes benchmarks/results/berry_mesh.json (node uuids included).

    verdi run benchmarks/berry_mesh.py --protocol fast [--factor 2] [--systems bn gaas]
"""

import argparse
import json
import os
import pathlib

import numpy as np
from aiida import orm
from aiida.engine import run_get_node

import aiida_mlresponse
from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays
from aiida_mlresponse.physics import crystals
from aiida_mlresponse.physics.polarization import fix_branch
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

RESULTS = pathlib.Path(aiida_mlresponse.__file__).resolve().parents[1] / 'benchmarks' / 'results' / 'berry_mesh.json'
SYSTEMS = {'bn': crystals.bn_cubic, 'gaas': crystals.gaas}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--protocol', default='fast')
parser.add_argument('--factor', type=int, default=2)
parser.add_argument('--step', type=float, default=0.01, help='displacement h of the cation, Bohr')
parser.add_argument('--systems', nargs='+', default=['bn', 'gaas'], choices=sorted(SYSTEMS))
parser.add_argument('--code', default='abinit@localhost')
args = parser.parse_args()
code = orm.load_code(args.code)


def run(structure, **kwargs):
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(code, structure, protocol=args.protocol, **kwargs)
    _, node = run_get_node(builder)
    if not node.is_finished_ok:
        raise SystemExit(f'{node.process_label}<{node.pk}> failed: {node.exit_status} {node.exit_message}')
    return node


def moved(structure, shift_bohr):
    cell, positions, symbols, _ = structure_to_arrays(structure)
    positions = positions.copy()
    positions[0, 0] += shift_bohr * BOHR_TO_ANGSTROM
    return structure_from_arrays(cell, positions, symbols)


results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
for system in args.systems:
    structure = structure_from_arrays(*SYSTEMS[system]())
    cell = np.array(structure.cell) * ANGSTROM_TO_BOHR
    volume = abs(np.linalg.det(cell))
    equilibrium = run(structure, response={'polarization': False, 'dielectric': True, 'phonons': True})
    arrays = equilibrium.outputs.output_arrays
    raw, imposed = arrays.get_array('born_charges_raw'), arrays.get_array('born_charges')
    runs = {sign: run(moved(structure, sign * args.step), response={'polarization': True, 'dielectric': False},
                      overrides={'kpoints': {'polarization_mesh_factor': args.factor}}) for sign in (1, -1)}
    out = {sign: node.outputs.output_arrays for sign, node in runs.items()}

    def z_fd(name):  # Ω ΔP_x / Δτ_x of the cation, both on one branch
        plus, minus = out[1].get_array(name), out[-1].get_array(name)
        return float(volume * (fix_branch(plus, minus, cell) - minus)[0] / (2 * args.step))

    mesh = list(equilibrium.inputs.abinit.kpoints.get_kpoints_mesh()[0])
    entry = {
        'protocol': args.protocol, 'mesh': mesh, 'factor': args.factor, 'step_bohr': args.step,
        'dfpt_cation_raw': float(raw[0, 0, 0]), 'dfpt_anion_raw': float(raw[1, 0, 0]),
        'dfpt_asr_imposed': float(imposed[0, 0, 0]), 'dfpt_asr_violation': float(raw[:, 0, 0].sum()),
        'berry_fd_mesh': z_fd('polarization_scf_mesh'), 'berry_fd_dense_mesh': z_fd('polarization_dense_mesh'),
        'berry_fd_extrapolated': z_fd('polarization'),
        'nodes': {'dfpt': equilibrium.uuid, 'plus': runs[1].uuid, 'minus': runs[-1].uuid},
    }
    entry['relative_to_dfpt_asr_imposed'] = {key: entry[key] / entry['dfpt_asr_imposed'] - 1
                                            for key in ('berry_fd_mesh', 'berry_fd_dense_mesh', 'berry_fd_extrapolated')}
    results[f'{system} {args.protocol}'] = entry
    print(f'{system} {args.protocol} (mesh {mesh}, fcc4): Z*_xx of the cation')
    print(f'  DFPT: {entry["dfpt_cation_raw"]:.4f} (anion {entry["dfpt_anion_raw"]:.4f}, ASR imposed {entry["dfpt_asr_imposed"]:.4f})')
    for key in ('berry_fd_mesh', 'berry_fd_dense_mesh', 'berry_fd_extrapolated'):
        print(f'  {key}: {entry[key]:.4f} ({100 * entry["relative_to_dfpt_asr_imposed"][key]:+.2f} % vs DFPT with ASR)')
results['load_average_at_end'] = os.getloadavg()[0]
RESULTS.write_text(json.dumps(results, indent=1) + '\n')
print(f'wrote {RESULTS.relative_to(RESULTS.parents[2])}')
