"""Strained-Mg label campaign for the PCA-MLP (seed 002's data): N seeded deformations, relaxed by ABINIT.

    verdi daemon start
    verdi run workchains/run_mg_labels.py --protocol fast --count 1500 --seed 2024 --max-concurrent 3 --warm-start --daemon

The deformations come from a calcfunction (seed on record); one `LabelsWorkChain` (kind `mg_strain`)
relaxes them, `--max-concurrent` at a time, leaves failures out with their reason (output `failed`),
and returns one DatasetData node, which is what training takes (`TrainingCalculation`, or
`aiida-mlresponse dataset export PK mg.npz` for the benchmarks). `--warm-start` starts each
relaxation from R(D) fitted to the rows already relaxed (fewer BFGS steps, same result within
tolmxf). `--sigma` / `--sigma-angle` widen the sampled box (an active-learning benchmark pool:
`--protocol test --sigma 0.08 --sigma-angle 5`). `--extend PK` adds the new rows to an existing dataset.
`--daemon` submits and returns (follow it with `verdi process report PK`); without it the campaign runs in this
process.
"""

import argparse

from aiida import orm
from aiida.engine import run_get_node, submit

from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_deformation_configurations

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--protocol', default='fast')
parser.add_argument('--count', type=int, default=1500)
parser.add_argument('--seed', type=int, default=2024)
parser.add_argument('--code', default='abinit@localhost')
parser.add_argument('--sigma', type=float, default=0.05, help='σ of the stretches λ (truncated at 2σ)')
parser.add_argument('--sigma-angle', type=float, default=3.0, help='σ of the cell angles (degrees, truncated at 2σ)')
parser.add_argument('--max-concurrent', type=int, default=1, help='relaxations in flight at once')
parser.add_argument('--warm-start', action='store_true', help='start from R fitted to the rows already relaxed')
parser.add_argument('--extend', default=None, help='pk or uuid of an mg_strain dataset to extend')
parser.add_argument('--daemon', action='store_true', help='submit to the daemon and return')
args = parser.parse_args()

if args.protocol == 'precise':
    from aiida_mlresponse.abinit.mg import install_seed_family

    install_seed_family()
configurations = sample_deformation_configurations(orm.Int(args.count), orm.Int(args.seed), orm.Float(args.sigma),
                                                   orm.Float(args.sigma_angle))
builder = LabelsWorkChain.get_builder_from_protocol(
    orm.load_code(args.code), configurations, 'mg_strain', protocol=args.protocol, warm_start=args.warm_start,
    max_concurrent=args.max_concurrent, dataset=orm.load_node(args.extend) if args.extend else None)
builder.metadata.label = f'mg campaign {args.protocol} seed {args.seed}'
if args.daemon:
    node = submit(builder)
    print(f'submitted {node.process_label}<{node.pk}>: follow with `verdi process report {node.pk}`; '
          f'its `dataset` output is the training set.')
else:
    results, node = run_get_node(builder)
    if not node.is_finished_ok:
        raise SystemExit(f'{node.process_label}<{node.pk}> failed: exit status {node.exit_status} {node.exit_message}')
    dataset, failed = results['dataset'], results['failed'].get_dict()
    print(f'DatasetData<{dataset.pk}>: {dataset.size} configurations, {len(failed)} left out '
          f'(`verdi process report {node.pk}` says why); export: `aiida-mlresponse dataset export {dataset.pk} mg.npz`')
