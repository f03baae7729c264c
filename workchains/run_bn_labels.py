"""Label a small cubic-BN displacement set and print P and ε∞ per configuration, each with its ABINIT run.

    verdi run workchains/run_bn_labels.py [--protocol fast] [--count 4] [--sigma 0.01] [--seed 0]
    verdi run workchains/run_bn_labels.py --protocol test --count 400 --sigma 0.03 --max-concurrent 2 --daemon

Samples `count` displaced cells (a calcfunction: the seed is on record), labels the equilibrium cell
and each displaced one with ABINIT (Berry-phase P, DFPT ε∞) through `LabelsWorkChain`, and prints
P and ε∞ per configuration with the ABINIT calculation behind each row. `--daemon` submits and returns (a large
set, e.g. an active-learning benchmark pool; export its `dataset` output with `aiida-mlresponse dataset export`).
"""

import argparse

from aiida import orm
from aiida.engine import run_get_node, submit

from aiida_mlresponse.data import structure_from_arrays
from aiida_mlresponse.physics.crystals import bn_cubic
from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_displacement_configurations
from aiida_mlresponse.workflows.provenance import calculations_behind

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--protocol', default='fast')
parser.add_argument('--count', type=int, default=4)
parser.add_argument('--sigma', type=float, default=0.01, help='displacement width in Å')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--code', default='abinit@localhost')
parser.add_argument('--max-concurrent', type=int, default=2, help='ABINIT runs in flight at once')
parser.add_argument('--daemon', action='store_true', help='submit to the daemon and return')
args = parser.parse_args()

reference = structure_from_arrays(*bn_cubic())
configurations = sample_displacement_configurations(reference, orm.Float(args.sigma), orm.Int(args.count), orm.Int(args.seed))
builder = LabelsWorkChain.get_builder_from_protocol(
    orm.load_code(args.code), configurations, 'response', reference=reference, protocol=args.protocol,
    max_concurrent=args.max_concurrent)
builder.metadata.label = f'bn labels {args.protocol} sigma {args.sigma} seed {args.seed}'
if args.daemon:
    node = submit(builder)
    print(f'submitted {node.process_label}<{node.pk}>: follow with `verdi process report {node.pk}`; '
          f'its `dataset` output holds the labels.')
    raise SystemExit(0)
results, node = run_get_node(builder)
if not node.is_finished_ok:
    raise SystemExit(f'{node.process_label}<{node.pk}> failed: exit status {node.exit_status} {node.exit_message}')

dataset = results['dataset']
calcs = [orm.load_node(uuid) for uuid in dataset.base.attributes.get('calculations')]
assert {c.pk for c in calcs} == {c.pk for c in calculations_behind(dataset)}
print(f'\nDataset <{dataset.pk}> {dataset.uuid}: {dataset.size} BN configurations, protocol {args.protocol}')
print(f'{"#":>3} {"P_x":>12} {"P_y":>12} {"P_z":>12}  {"eps_xx":>8} {"eps_yy":>8} {"eps_zz":>8} {"eps_xy":>9}  ABINIT calculation')
print(f'{"":>3} {"(e/bohr^2)":>38}  {"(dimensionless)":>36}')
polarization = dataset.get_array('polarization')
epsilon = dataset.get_array('dielectric_tensor')
for row, p, eps, calc in zip(dataset.get_array('configuration_index'), polarization, epsilon, calcs):
    print(f'{row:>3} {p[0]:12.4e} {p[1]:12.4e} {p[2]:12.4e}  {eps[0, 0]:8.4f} {eps[1, 1]:8.4f} {eps[2, 2]:8.4f} {eps[0, 1]:9.2e}  '
          f'{calc.process_label}<{calc.pk}> {calc.uuid}')
failed = results['failed'].get_dict()
if failed:
    print(f'{len(failed)} configurations left out: ' + '; '.join(f'{i}: {f["exit_status"]} {f["message"]}' for i, f in failed.items()))
print(f'\nProvenance: `aiida-mlresponse provenance calcs {dataset.pk}` lists the calculations; '
      f'`verdi node graph generate {dataset.pk}` draws the graph; '
      f'`aiida-mlresponse dataset export {dataset.pk} bn.npz` writes the rows to a file.')
