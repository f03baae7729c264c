"""Scale benchmark: time and peak memory of P, ε∞, Z* and Raman tensors for GaAs supercells (2 to ~10^4 atoms).

For each supercell (L x L x L fcc primitive cells of zincblende GaAs, atoms displaced by σ = 0.01 Å) and
for the radnet CNN of `aiida_mlresponse.ml.radnet` (its default preset unless --preset; untrained weights:
the cost does not depend on their values), the script times, in a fresh subprocess so that the peak memory
is that size's alone:

- inputs: neighbour list and density cubes (ml.radnet.density, O(N));
- predict: P (3) and ε∞ (6) from the cubes (two networks, no gradients);
- path A: the full Jacobian of all 9 outputs by reverse mode (ml.radnet.derivatives.jacobian, one cube build,
  9 network VJPs, one batched VJP through the density) -> Z* (ASR) and ∂χ/∂τ, then the Raman tensors of
  the three optical Γ modes (physics.raman.raman_tensors);
- path B: Z* from the 3 VJPs of P only, and the Raman tensors by forward mode, one JVP per optical Γ mode
  (ml.radnet.derivatives.chi_directional_derivatives).

Both paths give Z* and the Raman tensors (they are compared); the total of each is inputs + predict + the
path. The exponent is fitted on sizes >= 128 atoms (smaller cells measure fixed overheads), and on all.

    nice -n 10 .venv/bin/python benchmarks/radnet_scale.py            # writes benchmarks/results/radnet_scale.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = ROOT / 'benchmarks' / 'results' / 'radnet_scale.json'


def machine() -> dict:
    cpu = 'unknown'
    try:
        for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return {'cpu': cpu, 'cores': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version(),
            'torch': torch.__version__, 'device': 'cpu'}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def run_one(repeats: int, preset: str | None, chunk: int, threads: int, channels_last: bool, seed: int = 0) -> dict:
    """Everything for one supercell, in this process (called in a subprocess by main)."""
    import torch

    torch.set_num_threads(threads)
    from aiida_mlresponse.ml.common import voigt_to_tensor
    from aiida_mlresponse.ml.radnet import network as radnet
    from aiida_mlresponse.ml.radnet.density import AtomCubes
    from aiida_mlresponse.ml.radnet.derivatives import AtomSumModel, chi_directional_derivatives, jacobian
    from aiida_mlresponse.physics.born import impose_acoustic_sum_rule
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.physics.raman import mode_displacements, raman_tensors
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    cell, positions, _ = gaas()
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    lattice = np.array(list(np.ndindex(repeats, repeats, repeats))) @ cell
    positions = (lattice[:, None] + positions[None]).reshape(-1, 3)
    positions += np.random.default_rng(seed).normal(0.0, 0.01 * ANGSTROM_TO_BOHR, positions.shape)
    cell = repeats * cell
    n_atoms = len(positions)
    numbers = np.tile([31, 33], n_atoms // 2)
    masses = np.tile([69.723, 74.9216], n_atoms // 2)
    volume = abs(np.linalg.det(cell))

    # The three optical Γ modes of zincblende, repeated in every primitive cell: fixed by the masses alone
    # (orthogonal to the rigid translations in mass-weighted coordinates), normalized over the supercell.
    m_ga, m_as = masses[:2]
    weights = np.array([np.sqrt(m_as), -np.sqrt(m_ga)]) / np.sqrt(m_ga + m_as)
    eigenvectors = np.zeros((3 * n_atoms, 3))
    for gamma in range(3):
        pattern = np.zeros((n_atoms, 3))
        pattern[:, gamma] = np.tile(weights, n_atoms // 2)
        eigenvectors[:, gamma] = pattern.ravel() / np.sqrt(n_atoms // 2)

    hyper = {} if preset is None else {'preset': preset}
    torch.manual_seed(seed)
    networks = {key: radnet.RadNet(hyper, n_outputs=k) for key, k in (('P', 3), ('eps', 6))}
    for network in networks.values():
        network.eval().requires_grad_(False)
        if channels_last:
            network.to(memory_format=torch.channels_last_3d)
    preset_used = networks['P'].hyperparameters['preset']
    flops = radnet.count_flops_per_atom(networks['P'].hyperparameters) + radnet.count_flops_per_atom(
        networks['eps'].hyperparameters)
    cubes = AtomCubes(n=networks['P'].hyperparameters['cube_size'], dtype=torch.float32)

    def both(c):
        return torch.cat([networks['P'].atom_contributions(c), networks['eps'].atom_contributions(c)], dim=-1)

    times, cpu_times = {}, {}
    clock = {}

    def tic():
        clock['wall'], clock['cpu'] = time.perf_counter(), time.process_time()

    def toc(key):
        times[key] = time.perf_counter() - clock['wall']
        cpu_times[key] = time.process_time() - clock['cpu']

    tic()
    combined = AtomSumModel(both, cubes, cell, numbers, positions, chunk_size=chunk)  # builds the neighbour list
    with torch.no_grad():
        x = cubes._tensor(positions)
        cube_chunks = [combined.cubes(x, centres) for centres in combined.chunks()]
    toc('inputs')

    tic()
    with torch.no_grad():
        prediction = sum(both(c).sum(0) for c in cube_chunks)
    toc('predict')
    del cube_chunks

    # Path A: full Jacobian of the 9 outputs.
    tic()
    full = jacobian(combined, positions).double().numpy()  # (9, N, 3)
    born_a = impose_acoustic_sum_rule(volume * full[:3].transpose(1, 0, 2))
    dchi = impose_acoustic_sum_rule(voigt_to_tensor(np.moveaxis(full[3:], 0, -1)) / (4 * np.pi))
    toc('jacobian_9_vjp')
    tic()
    raman_a = raman_tensors(dchi, eigenvectors, masses, volume)
    toc('raman_from_jacobian')
    del full, dchi

    # Path B: 3 VJPs for Z*, 3 JVPs for the Raman tensors.
    polarization = AtomSumModel(networks['P'].atom_contributions, cubes, cell, numbers, positions, chunk_size=chunk)
    dielectric = AtomSumModel(networks['eps'].atom_contributions, cubes, cell, numbers, positions, chunk_size=chunk)
    tic()
    born_b = impose_acoustic_sum_rule(volume * jacobian(polarization, positions).double().numpy().transpose(1, 0, 2))
    toc('born_3_vjp')
    tic()
    directions = mode_displacements(eigenvectors, masses)
    raman_b = np.sqrt(volume) * chi_directional_derivatives(dielectric, positions, directions)
    toc('raman_3_jvp')

    scale = lambda a: float(np.abs(a).max())  # noqa: E731
    return {
        'repeats': repeats, 'atoms': n_atoms, 'preset': preset_used, 'cube_size': cubes.n,
        'gflop_per_forward_both_networks': flops * n_atoms / 1e9,
        'neighbours_per_atom': float(combined.neighbours.mask.sum(1).float().mean()),
        'times_s': times, 'cpu_times_s': cpu_times,
        'total_path_a_s': times['inputs'] + times['predict'] + times['jacobian_9_vjp'] + times['raman_from_jacobian'],
        'total_path_b_s': times['inputs'] + times['predict'] + times['born_3_vjp'] + times['raman_3_jvp'],
        'peak_rss_mb': peak_rss_mb(),
        'born_paths_max_rel_diff': scale(born_a - born_b) / scale(born_a),
        'raman_paths_max_rel_diff': scale(raman_a - raman_b) / scale(raman_a),
        'born_asr_max': scale(born_a.sum(0)), 'prediction_finite': bool(torch.isfinite(prediction).all()),
    }


def fit_exponent(atoms, seconds) -> float:
    return float(np.polyfit(np.log(atoms), np.log(seconds), 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, nargs='+', default=[1, 2, 4, 8, 12, 17],
                        help='supercell repeats L (2 L³ atoms); 17 gives 9826 atoms')
    parser.add_argument('--preset', default=None, help='radnet layer preset (default: radnet default)')
    parser.add_argument('--chunk', type=int, default=1024, help='centre atoms per chunk')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-channels-last', dest='channels_last', action='store_false')
    parser.add_argument('--output', type=pathlib.Path, default=RESULT)
    parser.add_argument('--single', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.single is not None:
        # Warm-up (oneDNN builds its kernels per shape on first use) on a cell of at most one chunk of atoms.
        import aiida_mlresponse.ml.radnet.derivatives, aiida_mlresponse.ml.radnet.network, aiida_mlresponse.physics.raman  # noqa: E401,F401
        baseline_mb = peak_rss_mb()
        run_one(min(args.single, 8), args.preset, args.chunk, args.threads, args.channels_last, seed=1)
        row = run_one(args.single, args.preset, args.chunk, args.threads, args.channels_last)
        print(json.dumps({**row, 'baseline_rss_mb': baseline_mb}))
        return

    load_before = os.getloadavg()
    rows = []
    header = (f"{'atoms':>6} {'inputs':>8} {'predict':>8} {'9 VJP':>8} {'A total':>8} {'Z* 3VJP':>8} "
              f"{'3 JVP':>8} {'B total':>8} {'peak MB':>8} {'A/B diff':>9}")
    print(header)
    for repeats in args.repeats:
        command = [sys.executable, __file__, '--single', str(repeats), '--chunk', str(args.chunk),
                   '--threads', str(args.threads)] + ([] if args.preset is None else ['--preset', args.preset]) + (
                   [] if args.channels_last else ['--no-channels-last'])
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        t = row['times_s']
        print(f"{row['atoms']:>6} {t['inputs']:>8.3f} {t['predict']:>8.3f} {t['jacobian_9_vjp']:>8.3f} "
              f"{row['total_path_a_s']:>8.3f} {t['born_3_vjp']:>8.3f} {t['raman_3_jvp']:>8.3f} "
              f"{row['total_path_b_s']:>8.3f} {row['peak_rss_mb']:>8.0f} "
              f"{max(row['born_paths_max_rel_diff'], row['raman_paths_max_rel_diff']):>9.1e}", flush=True)
    load_after = os.getloadavg()

    atoms = np.array([r['atoms'] for r in rows])
    best = np.array([min(r['total_path_a_s'], r['total_path_b_s']) for r in rows])
    large = atoms >= 128
    exponents = {}
    for label, key in (('path_a', 'total_path_a_s'), ('path_b', 'total_path_b_s'), ('best', None)):
        seconds = best if key is None else np.array([r[key] for r in rows])
        exponents[label] = {'sizes_ge_128_atoms': fit_exponent(atoms[large], seconds[large]) if large.sum() >= 2 else None,
                            'all_sizes': fit_exponent(atoms, seconds)}
    largest = rows[int(np.argmax(atoms))]
    summary = {
        'largest_cell_atoms': int(largest['atoms']),
        'largest_cell_best_total': {'value': min(largest['total_path_a_s'], largest['total_path_b_s']), 'unit': 's'},
        'target_time_for_1e4_atoms': {'value': 60.0, 'unit': 's'},
        'exponent_best_ge_128_atoms': exponents['best']['sizes_ge_128_atoms'],
        'target_exponent': 1.1,
    }
    def show(value):
        return 'n/a' if value is None else f'{value:.3f}'

    print('exponents (fit on >= 128 atoms / all sizes): ' + ', '.join(
        f"{label} {show(e['sizes_ge_128_atoms'])} / {show(e['all_sizes'])}" for label, e in exponents.items()))
    print(f"largest cell {largest['atoms']} atoms: best total {summary['largest_cell_best_total']['value']:.1f} s "
          f"(target 60 s); load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    def with_units(row):
        t = row['times_s']
        return {
            'atoms': row['atoms'], 'preset': row['preset'], 'cube_size': row['cube_size'],
            'neighbours_per_atom': {'value': row['neighbours_per_atom'], 'unit': 'atoms'},
            'forward_cost_both_networks': {'value': row['gflop_per_forward_both_networks'], 'unit': 'GFLOP'},
            **{f'time_{k}': {'value': v, 'unit': 's (wall)'} for k, v in t.items()},
            **{f'cpu_time_{k}': {'value': v, 'unit': 's (process CPU, all threads)'} for k, v in row['cpu_times_s'].items()},
            'time_total_path_a': {'value': row['total_path_a_s'], 'unit': 's (wall)'},
            'time_total_path_b': {'value': row['total_path_b_s'], 'unit': 's (wall)'},
            'peak_memory': {'value': row['peak_rss_mb'], 'unit': 'MB (max RSS of the process, warm-up included)'},
            'memory_after_imports': {'value': row['baseline_rss_mb'], 'unit': 'MB'},
            'born_charges_path_a_vs_b_max_rel_diff': {'value': row['born_paths_max_rel_diff'], 'unit': '1'},
            'raman_tensors_path_a_vs_b_max_rel_diff': {'value': row['raman_paths_max_rel_diff'], 'unit': '1'},
        }

    result = {
        'benchmark': 'radnet_scale',
        'description': __doc__.split('\n\n')[0],
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'machine': {**machine(), 'torch_threads': args.threads, 'load_average_before': load_before[0],
                    'load_average_after': load_after[0]},
        'settings': {'chunk_atoms': args.chunk, 'channels_last_3d': args.channels_last, 'dtype': 'float32',
                     'weights': 'untrained (timing only)'},
        'rows': [with_units(r) for r in rows],
        'exponents': exponents,
        'summary': summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
