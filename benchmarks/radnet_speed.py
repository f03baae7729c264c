"""Speed of one radnet prediction against one ABINIT DFPT ε∞ run of the same 2-atom GaAs cell.

Both are timed in this run, on this machine:
  - ABINIT: `AbinitResponseBaseWorkChain` at the `fast` protocol on the equilibrium cell (ground state with
    Berry phase, ddk, electric-field response: the cost of one training label), wall time of the AiiDA
    process and ABINIT's own wall time.
  - Model: loading two committee checkpoints (P and ε∞, trained here on the paper's GaAs data), making the
    density cubes, predicting P and ε∞ with their committee spread, Z* by autograd and the Raman tensors
    of the three optical modes by forward-mode derivatives: everything a user needs per structure.
Ratio = ABINIT wall / model wall. Results: benchmarks/results/radnet_speed.json.

Needs the default AiiDA profile made by `aiida-mlresponse setup`. Run:
    .venv/bin/python benchmarks/radnet_speed.py [--protocol fast] [--repeats 20] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import tempfile
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / 'shared' / 'data' / 'radnet' / 'GaAs.h5'
RESULTS = ROOT / 'benchmarks' / 'results' / 'radnet_speed.json'


def time_abinit(protocol: str) -> dict:
    from aiida import load_profile, orm
    from aiida.engine import run_get_node

    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.workflows.base import AbinitResponseBaseWorkChain

    load_profile()
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        orm.load_code('abinit@localhost'), structure_from_arrays(*gaas()), protocol=protocol)
    start = time.perf_counter()
    _, node = run_get_node(builder)
    wall = time.perf_counter() - start
    if not node.is_finished_ok:
        raise SystemExit(f'ABINIT run failed: {node.exit_status} {node.exit_message}')
    calc = node.called[-1]
    text = calc.outputs.retrieved.base.repository.get_object_content('aiida.abo')
    cpu, abinit_wall = map(float, re.findall(r'Overall time at end \(sec\) : cpu=\s*([\d.]+)\s+wall=\s*([\d.]+)', text)[-1])
    epsilon = calc.outputs.output_arrays.get_array('dielectric_tensor')
    return {'process_wall_s': wall, 'abinit_wall_s': abinit_wall, 'abinit_cpu_s': cpu, 'calculation': calc.uuid,
            'epsilon_xx': float(epsilon[0, 0])}


def train_models(epochs: int, directory: pathlib.Path) -> dict:
    """Committees for P and ε∞ on the paper's GaAs data, saved as model files; returns their paths."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.committee import dielectric_targets, fit_committee
    from aiida_mlresponse.ml.datasets import load_radnet_h5

    data = load_radnet_h5(DATA)
    paths = {}
    for target, values in (('polarization', data.polarization), ('dielectric', dielectric_targets(data.dielectric))):
        start = time.perf_counter()
        committee, _ = fit_committee(data.positions, data.cell, data.numbers, values, target,
                                     hyperparameters={'training': {'epochs': epochs, 'log_every': 0}}, log=None)
        paths[target] = checkpoint.save(directory / f'{target}.pt', committee, metadata={
            'target': target, 'cell_bohr': data.cell.tolist(), 'atomic_numbers': data.numbers.tolist()})
        print(f'trained the {target} committee in {time.perf_counter() - start:.1f} s', flush=True)
    return paths


def one_prediction(paths: dict, positions, masses_amu) -> dict:
    """Everything per structure, from the model files: P, ε∞ (with spread), Z*, Raman tensors."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.derivatives import chi_derivatives
    from aiida_mlresponse.ml.predict import predict_response
    from aiida_mlresponse.physics.raman import raman_tensors

    p_model, p_payload = checkpoint.load(paths['polarization'])
    e_model, e_payload = checkpoint.load(paths['dielectric'])
    cell = np.asarray(p_payload['metadata']['cell_bohr'])
    numbers = p_payload['metadata']['atomic_numbers']
    out = predict_response(p_model, p_payload['metadata'], positions[None], cell, numbers, with_born_charges=True)
    out.update(predict_response(e_model, e_payload['metadata'], positions[None], cell, numbers))
    # The three optical modes of a diatomic cell: atoms move against each other, e_κ ∝ ±√M_other.
    weights = np.array([np.sqrt(masses_amu[1]), -np.sqrt(masses_amu[0])]) / np.sqrt(sum(masses_amu))
    eigenvectors = np.zeros((6, 3))
    for direction in range(3):
        eigenvectors[direction::3, direction] = weights
    volume = abs(np.linalg.det(cell))
    # Reverse mode (6 VJPs) rather than one JVP per mode: for 2 atoms both are cheap, and the members'
    # Taylor head is not forward-mode differentiable.
    dchi = chi_derivatives(e_model.position_function(cell, numbers, positions), positions)
    out['raman_tensors'] = raman_tensors(dchi, eigenvectors, masses_amu, volume)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='fast')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--epochs', type=int, default=20)
    args = parser.parse_args()

    from aiida_mlresponse.ml.datasets import load_radnet_h5

    data = load_radnet_h5(DATA)
    masses = [69.723, 74.9216]  # Ga, As (amu)
    with tempfile.TemporaryDirectory() as tmp:
        paths = train_models(args.epochs, pathlib.Path(tmp))
        load_before = os.getloadavg()[0]
        positions = data.positions[0]
        start = time.perf_counter()
        first = one_prediction(paths, positions, masses)
        cold = time.perf_counter() - start
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            one_prediction(paths, positions, masses)
            walls.append(time.perf_counter() - start)
    abinit = time_abinit(args.protocol)
    load_after = os.getloadavg()[0]
    model_wall = statistics.median(walls)
    result = {
        'description': 'one radnet prediction (checkpoint load, density, P, ε∞, spreads, Z*, Raman tensors) vs one '
                       f'ABINIT DFPT ε∞ run (GS + Berry phase + ddk + E-field) of 2-atom GaAs at the {args.protocol} protocol',
        'machine': {'arch': platform.machine(), 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
                    'load_average_before_after': [load_before, load_after], 'gpu': 'none'},
        'model_wall_median_s': model_wall, 'model_wall_min_s': min(walls), 'model_wall_first_call_s': cold,
        'repeats': args.repeats, 'abinit': abinit,
        'ratio_abinit_wall_over_model_median': abinit['abinit_wall_s'] / model_wall,
        'ratio_process_wall_over_model_median': abinit['process_wall_s'] / model_wall,
        'target_ratio': 10000,
        'prediction': {'born_charges_e': np.asarray(first['born_charges'][0]).tolist(),
                       'epsilon': np.asarray(first['dielectric_tensor'][0]).tolist(),
                       'raman_tensors_bohr': np.asarray(first['raman_tensors']).tolist()},
        'units': {'times': 's', 'born_charges': 'e', 'raman_tensors': 'Bohr (√Ω · ∂χ/∂τ · e/√M, atomic units)'},
    }
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f'model: {model_wall * 1e3:.1f} ms median ({min(walls) * 1e3:.1f} ms min, first call {cold * 1e3:.1f} ms) '
          f'over {args.repeats} predictions with Z* and Raman tensors')
    print(f'ABINIT {args.protocol}: {abinit["abinit_wall_s"]:.1f} s wall ({abinit["abinit_cpu_s"]:.1f} s cpu), '
          f'AiiDA process {abinit["process_wall_s"]:.1f} s')
    print(f'ratio ABINIT/model: {result["ratio_abinit_wall_over_model_median"]:.0f}x '
          f'(target 10,000x); load average {load_before:.1f} -> {load_after:.1f}; written to {RESULTS}')


if __name__ == '__main__':
    main()
