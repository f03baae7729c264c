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
    .venv/bin/python benchmarks/radnet_speed.py [--protocol fast] [--repeats 50] [--epochs 20] [--threads 1]
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
    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

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
    from aiida_mlresponse.ml.radnet.fit import dielectric_targets, fit_committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

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


MASSES_AMU = [69.723, 74.9216]  # Ga, As


def optical_modes(masses_amu) -> np.ndarray:
    """The three optical modes of a diatomic cell (6, 3): atoms move against each other, e_κ ∝ ±√M_other."""
    weights = np.array([np.sqrt(masses_amu[1]), -np.sqrt(masses_amu[0])]) / np.sqrt(sum(masses_amu))
    eigenvectors = np.zeros((6, 3))
    for direction in range(3):
        eigenvectors[direction::3, direction] = weights
    return eigenvectors


def load_models(paths: dict):
    """(committees by target, cell, numbers) from the two model files."""
    from aiida_mlresponse.ml import checkpoint

    committees = {}
    for target, path in paths.items():
        committees[target], payload = checkpoint.load(path)
    metadata = payload['metadata']
    return committees, np.asarray(metadata['cell_bohr']), metadata['atomic_numbers']


def predict(committees, cell, numbers, positions, cache=None) -> dict:
    """Everything per structure from models in memory: P, ε∞ (with spread), Z*, Raman tensors."""
    from aiida_mlresponse.ml.radnet.predict import predict_structure
    from aiida_mlresponse.physics.raman import raman_tensors

    out = predict_structure(committees, positions, cell, numbers, neighbour_cache=cache)
    volume = abs(np.linalg.det(cell))
    out['raman_tensors'] = raman_tensors(out['chi_derivatives'], optical_modes(MASSES_AMU), MASSES_AMU, volume)
    return out


def cold_prediction(paths: dict, positions) -> dict:
    """From the model files: loading both committees, then one prediction."""
    committees, cell, numbers = load_models(paths)
    return predict(committees, cell, numbers, positions)


def legacy_prediction(paths: dict, positions) -> dict:
    """The path this benchmark timed before predict_structure (for the before/after comparison): autograd through
    each committee's position function (`predict.reference_response`, `derivatives.chi_derivatives`)."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.radnet.derivatives import chi_derivatives
    from aiida_mlresponse.ml.radnet.predict import reference_response
    from aiida_mlresponse.physics.raman import raman_tensors

    p_model, p_payload = checkpoint.load(paths['polarization'])
    e_model, e_payload = checkpoint.load(paths['dielectric'])
    cell = np.asarray(p_payload['metadata']['cell_bohr'])
    numbers = p_payload['metadata']['atomic_numbers']
    out = reference_response(p_model, p_payload['metadata'], positions[None], cell, numbers, with_born_charges=True)
    out.update(reference_response(e_model, e_payload['metadata'], positions[None], cell, numbers))
    dchi = chi_derivatives(e_model.position_function(cell, numbers, positions), positions)
    out['raman_tensors'] = raman_tensors(dchi, optical_modes(MASSES_AMU), MASSES_AMU, abs(np.linalg.det(cell)))
    return out


def timed(function, arguments, clock=time.perf_counter) -> list:
    walls = []
    for argument in arguments:
        start = clock()
        function(argument)
        walls.append(clock() - start)
    return walls


def summary(walls) -> dict:
    return {'median_s': statistics.median(walls), 'min_s': min(walls), 'max_s': max(walls), 'repeats': len(walls)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='fast')
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--legacy-repeats', type=int, default=10)
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)

    from aiida_mlresponse.ml.radnet.committee import NeighbourCache
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    data = load_radnet_h5(DATA)
    configurations = [data.positions[k % len(data.positions)] for k in range(args.repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = train_models(args.epochs, pathlib.Path(tmp))
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        first = cold_prediction(paths, configurations[0])  # first call in the process (lazy imports, allocator)
        first_call = time.perf_counter() - start
        cold = timed(lambda positions: cold_prediction(paths, positions), configurations)
        legacy = timed(lambda positions: legacy_prediction(paths, positions), configurations[:args.legacy_repeats])
        committees, cell, numbers = load_models(paths)
        warm_new_list = timed(lambda positions: predict(committees, cell, numbers, positions), configurations)
        cache = NeighbourCache()
        predict(committees, cell, numbers, configurations[0], cache)  # the list for this cell
        warm = timed(lambda positions: predict(committees, cell, numbers, positions, cache), configurations)
        # The CPU time of this thread alone: what a prediction costs when other processes share the cores.
        warm_cpu = timed(lambda positions: predict(committees, cell, numbers, positions, cache), configurations,
                         clock=time.thread_time)
        cold_cpu = timed(lambda positions: cold_prediction(paths, positions), configurations, clock=time.thread_time)
        legacy_check = legacy_prediction(paths, configurations[0])
        torch.set_num_threads(default_threads)  # the legacy path as it was measured before, torch's default threads
        legacy_default_threads = timed(lambda positions: legacy_prediction(paths, positions),
                                       configurations[:args.legacy_repeats // 2])
        torch.set_num_threads(args.threads)
    abinit = time_abinit(args.protocol)
    load_after = os.getloadavg()[0]
    timings = {'cold': summary(cold), 'warm_new_neighbour_list': summary(warm_new_list), 'warm': summary(warm),
               'legacy': summary(legacy), 'legacy_default_threads': summary(legacy_default_threads),
               'warm_thread_cpu': summary(warm_cpu), 'cold_thread_cpu': summary(cold_cpu),
               'default_torch_threads': default_threads, 'first_call_s': first_call}
    # wall against wall and CPU against CPU: ABINIT's wall time grows with the machine's load far more than
    # the model's, so the CPU ratio is the one that does not flatter the model on a busy machine.
    ratios = {name: abinit['abinit_wall_s'] / timings[name]['median_s']
              for name in ('cold', 'warm_new_neighbour_list', 'warm', 'legacy', 'legacy_default_threads')}
    ratios.update({name: abinit['abinit_cpu_s'] / timings[name]['median_s'] for name in ('warm_thread_cpu', 'cold_thread_cpu')})
    agreement = {key: float(np.abs(np.asarray(first[key]) - np.asarray(legacy_check[key])[0]).max())
                 for key in ('polarization', 'dielectric_tensor', 'born_charges')}
    agreement['raman_tensors'] = float(np.abs(first['raman_tensors'] - legacy_check['raman_tensors']).max())
    result = {
        'description': 'one radnet prediction (density, P, ε∞, spreads, Z*, Raman tensors of the optical modes) vs '
                       f'one ABINIT DFPT ε∞ run (GS + Berry phase + ddk + E-field) of 2-atom GaAs at the '
                       f'{args.protocol} protocol; cold includes loading both checkpoints, warm has the models in '
                       'memory (warm: neighbour list reused within the skin; warm_new_neighbour_list: built per '
                       'structure); legacy: the autograd path (predict.reference_response per model, separate ε∞ '
                       'graph), at 1 thread and at torch\'s default number of threads (as measured before); '
                       '*_thread_cpu: CPU time of the predicting thread (time.thread_time), not wall time',
        'machine': {'arch': platform.machine(), 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
                    'load_average_before_after': [load_before, load_after], 'gpu': 'none'},
        'timings': timings, 'abinit': abinit,
        'ratio_abinit_over_model_median': ratios,
        'ratio_note': 'wall over wall, except *_thread_cpu: ABINIT CPU seconds over the predicting thread\'s CPU seconds',
        'ratio_process_wall_over_warm_median': abinit['process_wall_s'] / timings['warm']['median_s'],
        'target_ratio': 10000,
        'max_abs_difference_to_legacy_path': agreement,
        'epochs': args.epochs,
        'prediction': {'born_charges_e': np.asarray(first['born_charges']).tolist(),
                       'epsilon': np.asarray(first['dielectric_tensor']).tolist(),
                       'raman_tensors_bohr': np.asarray(first['raman_tensors']).tolist()},
        'units': {'times': 's', 'born_charges': 'e', 'raman_tensors': 'Bohr (√Ω · ∂χ/∂τ · e/√M, atomic units)'},
    }
    RESULTS.write_text(json.dumps(result, indent=1))
    for name in ('cold', 'warm_new_neighbour_list', 'warm', 'legacy', 'legacy_default_threads', 'warm_thread_cpu',
                 'cold_thread_cpu'):
        t = timings[name]
        print(f'model {name}: {t["median_s"] * 1e3:.2f} ms median ({t["min_s"] * 1e3:.2f} ms min) over '
              f'{t["repeats"]} predictions with Z* and Raman tensors; ratio ABINIT/model {ratios[name]:.0f}x '
              f'({"CPU/CPU" if name.endswith("cpu") else "wall/wall"})')
    print(f'first call in the process (cold): {first_call * 1e3:.1f} ms; largest difference to the legacy path: '
          f'{agreement}')
    print(f'ABINIT {args.protocol}: {abinit["abinit_wall_s"]:.1f} s wall ({abinit["abinit_cpu_s"]:.1f} s cpu), '
          f'AiiDA process {abinit["process_wall_s"]:.1f} s')
    print(f'target 10,000x; torch threads {torch.get_num_threads()}; load average {load_before:.1f} -> '
          f'{load_after:.1f}; written to {RESULTS}')


if __name__ == '__main__':
    main()
