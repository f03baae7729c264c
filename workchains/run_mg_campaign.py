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
"""

import argparse
import json
import pathlib
import time

import numpy as np

FIELDS = ('rho', 'phi', 'u', 's')


def export(out: pathlib.Path, protocol: str, seed: int) -> pathlib.Path | None:
    files = sorted(p for p in (out / 'configs').glob('*.npz') if '.tmp' not in p.name)  # not one being written
    if not files:
        return None
    rows = [dict(np.load(path)) for path in files]
    stacked = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    target = out / f'mg_{protocol}_seed{seed}.npz'
    tmp = target.with_suffix('.tmp.npz')
    np.savez(tmp, **stacked)
    tmp.replace(target)
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='fast')
    parser.add_argument('--count', type=int, default=1500)
    parser.add_argument('--seed', type=int, default=2024)
    parser.add_argument('--out', default='runs/mg_fast')
    parser.add_argument('--code', default='abinit@localhost')
    parser.add_argument('--export-every', type=int, default=10)
    parser.add_argument('--export-only', action='store_true')
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

    from aiida_mlresponse.abinit.mg import install_seed_family
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

    for index, deformation in enumerate(deformations):
        target = out / 'configs' / f'{index:05d}.npz'
        if target.is_file() or str(index) in failed:
            continue
        start = time.time()
        builder = MgRelaxBaseWorkChain.get_builder_from_protocol(code, deformation=deformation, protocol=args.protocol)
        results, node = run_get_node(builder)
        group.add_nodes(node)
        seconds = time.time() - start
        if not node.is_finished_ok or 'fields' not in results:
            failed[str(index)] = {'pk': node.pk, 'exit_status': node.exit_status, 'message': node.exit_message}
            failed_path.write_text(json.dumps(failed, indent=1))
            print(f'{index:5d} FAILED {node.exit_status} {node.exit_message} (pk {node.pk})', flush=True)
            continue
        parameters = results['output_parameters'].get_dict()
        arrays = results['output_arrays']
        row = {
            'index': index, 'workchain_pk': node.pk, 'seconds': seconds,
            'deformation': deformation, 'deformation_of_cell': arrays.get_array('deformation'),
            'free_energy': parameters['free_energy'], 'band_energy': parameters['band_energy'],
            'entropy_energy': parameters['entropy_energy'], 'fermi_energy': parameters['fermi_energy'],
            'volume': parameters['volume'], 'stress': arrays.get_array('stress'), 'R': arrays.get_array('R'),
            'xred': arrays.get_array('xred'), 'cell': arrays.get_array('cell'),
        }
        for name in FIELDS:
            row[name] = results['fields'].get_array(name)
        tmp = target.with_suffix('.tmp.npz')
        np.savez(tmp, **row)
        tmp.replace(target)
        print(f'{index:5d} ok {seconds:7.1f} s  F {parameters["free_energy"]:.6f} Ha  R {np.round(row["R"], 5).tolist()}', flush=True)
        if (index + 1) % args.export_every == 0:
            export(out, args.protocol, args.seed)

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
