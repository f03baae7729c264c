"""Strained-Mg label campaign (seed 002 data for the PCA-MLP): N seeded deformations, relaxed one at a time.

    nice -n 15 env OMP_NUM_THREADS=1 verdi -p mlresponse run workchains/run_mg_campaign.py \
        --protocol fast --count 1500 --seed 2024 --out runs/mg_fast

Each configuration is an MgRelaxBaseWorkChain (restarts included) stored in the profile and added
to the group `mlresponse/mg_campaign/<protocol>/seed<seed>`; its arrays are written at once to
<out>/configs/<index>.npz, so the campaign can be stopped and resumed (done indices are skipped) and
partial data are usable. Every `--export-every` configurations, and at the end, <out>/mg_<protocol>_seed<seed>.npz
gathers all finished rows for training (fields float32, (N, n1, n2, n3)); failures go to <out>/failed.json.
`--dataset` at the end also stores one DatasetData node linked to every calculation (gather_mg_dataset).
`--export-only` rebuilds the npz from <out>/configs without running anything.

`--max-concurrent K` (K > 1) submits to the daemon instead of running in this process and keeps K
relaxations in flight (start it with `verdi daemon start`; several serial ABINIT jobs beat one MPI job
on a few cores). Submitted work chains carry the extra `campaign_index`, so a stopped script picks up
the ones still running or finished on its next start. To stop cleanly: stop this script, `verdi process
kill` the campaign's running work chains (they are run again on the next start), `verdi daemon stop`. `--warm-start` starts each relaxation from R
predicted by a ridge fit R(D) (linear, then quadratic) through the configurations already finished (the relaxed
positions are the same within tolmxf; BFGS needs fewer steps).
"""

import argparse
import json
import pathlib
import time

import numpy as np

def export(out: pathlib.Path, protocol: str, seed: int) -> pathlib.Path | None:
    files = sorted(p for p in (out / 'configs').glob('*.npz') if '.tmp' not in p.name)  # not one being written
    if not files:
        return None
    rows = [dict(np.load(path)) for path in files]
    stacked = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    return save_npz(out / f'mg_{protocol}_seed{seed}.npz', stacked)


def save_npz(target: pathlib.Path, arrays: dict) -> pathlib.Path:
    """np.savez through a temporary file, so a reader never sees a half-written one."""
    tmp = target.with_suffix('.tmp.npz')
    np.savez(tmp, **arrays)
    tmp.replace(target)
    return target


def warm_start_r(deformations, done: dict, index: int) -> np.ndarray:
    """R(D) from a ridge fit (linear, quadratic from 60 rows) through the finished rows, clipped to their range."""
    rows = sorted(done)
    quadratic = len(rows) >= 60  # leave-one-out on 80 rows: mean |ΔR1| 0.0054 linear, 0.0034 quadratic

    def features(d):
        x = (np.atleast_2d(d) - [1, 1, 1, 90, 90, 90]) / [0.05, 0.05, 0.05, 3, 3, 3]
        columns = [np.ones(len(x))] + list(x.T)
        if quadratic:
            columns += [x[:, i] * x[:, j] for i in range(6) for j in range(i, 6)]
        return np.stack(columns, 1)

    design, targets = features(deformations[rows]), np.stack([done[row] for row in rows])
    coefficients = np.linalg.solve(design.T @ design + 0.1 * np.eye(design.shape[1]), design.T @ targets)
    spanned = np.abs(targets).max(0)
    return np.clip(features(deformations[index])[0] @ coefficients, -spanned, spanned)


def write_row(out: pathlib.Path, index: int, deformation, node) -> dict:
    parameters = node.outputs.output_parameters.get_dict()
    arrays = node.outputs.output_arrays
    row = {
        'index': index, 'workchain_pk': node.pk, 'seconds': (node.mtime - node.ctime).total_seconds(),
        'deformation': deformation, 'deformation_of_cell': arrays.get_array('deformation'),
        'free_energy': parameters['free_energy'], 'band_energy': parameters['band_energy'],
        'entropy_energy': parameters['entropy_energy'], 'fermi_energy': parameters['fermi_energy'],
        'volume': parameters['volume'], 'stress': arrays.get_array('stress'), 'R': arrays.get_array('R'),
        'xred': arrays.get_array('xred'), 'cell': arrays.get_array('cell'),
    }
    from aiida_mlresponse.workflows.mg_labels import FIELD_NAMES

    for name in FIELD_NAMES:
        row[name] = node.outputs.fields.get_array(name)
    save_npz(out / 'configs' / f'{index:05d}.npz', row)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='fast')
    parser.add_argument('--count', type=int, default=1500)
    parser.add_argument('--seed', type=int, default=2024)
    parser.add_argument('--out', default='runs/mg_fast')
    parser.add_argument('--code', default='abinit@localhost')
    parser.add_argument('--export-every', type=int, default=10)
    parser.add_argument('--export-only', action='store_true')
    parser.add_argument('--max-concurrent', type=int, default=1, help='> 1: submit to the daemon, this many in flight')
    parser.add_argument('--warm-start', action='store_true', help='start from R predicted by the finished rows')
    parser.add_argument('--dataset', action='store_true', help='store one DatasetData node at the end')
    args = parser.parse_args()

    out = pathlib.Path(args.out)
    (out / 'configs').mkdir(parents=True, exist_ok=True)
    if args.export_only:
        print('exported', export(out, args.protocol, args.seed))
        return

    from aiida import load_profile, orm
    from aiida.engine import run_get_node
    from aiida.manage import get_manager

    if get_manager().get_profile() is None:
        load_profile()

    from aiida_mlresponse.abinit.mg import install_seed_family, mg_structure
    from aiida_mlresponse.sampling.deformations import sample_deformations
    from aiida_mlresponse.workflows.mg_labels import MgRelaxBaseWorkChain, gather_mg_dataset

    if args.protocol == 'precise':
        install_seed_family()
    deformations = sample_deformations(args.count, seed=args.seed)
    np.save(out / 'deformations.npy', deformations)
    group, _ = orm.Group.collection.get_or_create(f'mlresponse/mg_campaign/{args.protocol}/seed{args.seed}')
    failed_path = out / 'failed.json'
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    code = orm.load_code(args.code)

    done = {int(path.stem): np.load(path)['R'] for path in (out / 'configs').glob('[0-9]*.npz') if '.tmp' not in path.name}
    pending = [index for index in range(len(deformations)) if index not in done and str(index) not in failed]

    def builder_for(index):
        structure = None
        if args.warm_start and len(done) >= 10:
            structure = mg_structure(deformations[index], r_params=warm_start_r(deformations, done, index))
        return MgRelaxBaseWorkChain.get_builder_from_protocol(
            code, deformation=None if structure else deformations[index], structure=structure, protocol=args.protocol)

    def harvest(index, node):
        if not node.is_finished_ok or 'fields' not in node.outputs:
            failed[str(index)] = {'pk': node.pk, 'exit_status': node.exit_status, 'message': node.exit_message}
            failed_path.write_text(json.dumps(failed, indent=1))
            print(f'{index:5d} FAILED {node.exit_status} {node.exit_message} (pk {node.pk})', flush=True)
            return
        row = write_row(out, index, deformations[index], node)
        done[index] = row['R']
        print(f'{index:5d} ok {row["seconds"]:7.1f} s  F {row["free_energy"]:.6f} Ha  R {np.round(row["R"], 5).tolist()}'
              f'  steps {node.outputs.output_parameters["relaxation_steps"]}', flush=True)
        if len(done) % args.export_every == 0:
            export(out, args.protocol, args.seed)

    if args.max_concurrent <= 1:
        for index in pending:
            _, node = run_get_node(builder_for(index))
            node.base.extras.set('campaign_index', index)
            group.add_nodes(node)
            harvest(index, node)
    else:
        from aiida.engine import submit
        from aiida.engine.daemon.client import get_daemon_client

        if not get_daemon_client().is_daemon_running:
            raise SystemExit('--max-concurrent needs the daemon: run `verdi daemon start` first.')
        # Adopt the work chains a previous run of this script left behind; killed or excepted ones (a
        # campaign stopped with `verdi process kill`, a machine gone) are not failures: run them again.
        in_flight = {}  # index -> node
        for node in group.nodes:
            index = node.base.extras.get('campaign_index', None)
            if index is not None and index in pending and index not in in_flight and not (node.is_killed or node.is_excepted):
                in_flight[index] = node
        pending = [index for index in pending if index not in in_flight]
        while pending or in_flight:
            for index, node in list(in_flight.items()):
                if node.is_terminated:
                    del in_flight[index]
                    harvest(index, node)
            while pending and len(in_flight) < args.max_concurrent:
                index = pending.pop(0)
                node = submit(builder_for(index))
                node.base.extras.set('campaign_index', index)
                group.add_nodes(node)
                in_flight[index] = node
            time.sleep(2)

    print('exported', export(out, args.protocol, args.seed), f'({len(failed)} failed)')
    if args.dataset:
        kwargs = {}
        for node in group.nodes:
            if node.is_finished_ok:
                index = int(np.argmin(np.abs(deformations - node.outputs.output_arrays.get_array('deformation')).sum(1)))
                kwargs.update({f'parameters_{index}': node.outputs.output_parameters,
                               f'arrays_{index}': node.outputs.output_arrays, f'fields_{index}': node.outputs.fields})
        dataset = gather_mg_dataset(**kwargs)
        print(f'DatasetData<{dataset.pk}> with {dataset.size} configurations')


if __name__ in ('__main__', '__builtin__'):
    main()
