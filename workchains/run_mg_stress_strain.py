"""Uniaxial stress-strain curve of strained Mg from a PCA-MLP model, with an optional DFT reference.

    verdi run workchains/run_mg_stress_strain.py MODEL --axis x2 --min -0.08 --step 0.005 \
        [--reference-strains -0.03 -0.06 --protocol fast]
    verdi run workchains/run_mg_stress_strain.py --dft-path --axis x2 --strains 0 -0.01 -0.02 ... [--protocol fast]

MODEL is a `ModelData` (pk or uuid) of kind `pcamlp`. The first form runs `StressStrainWorkChain`: the
committee's curve with its band, stiffness, instability and the PNG plot; with `--reference-strains`
it also relaxes the model's cells at those strains with ABINIT (`LabelsWorkChain`, kind `mg_strain`)
and reports ML - DFT. The second form runs `UniaxialDFTPathWorkChain`: the path from ABINIT alone
(transverse stresses zeroed by quasi-Newton steps of relaxed-ion runs), no model involved.
Both turn on caching of the package's CalcJobs, so a run launched again reuses finished ABINIT runs.
"""

import argparse

import numpy as np
from aiida import orm
from aiida.engine import run_get_node, submit

from aiida_mlresponse.workflows.campaigns import enable_caching

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('model', nargs='?', help='ModelData pk or uuid (not with --dft-path)')
parser.add_argument('--axis', default='x2', choices=('x1', 'x2', 'x3'))
parser.add_argument('--min', type=float, default=-0.08, help='most compressive applied strain (ML path)')
parser.add_argument('--max', type=float, default=0.0, help='least compressive applied strain (ML path)')
parser.add_argument('--step', type=float, default=0.005)
parser.add_argument('--reference-strains', type=float, nargs='*', default=None, help='DFT reference at these strains')
parser.add_argument('--dft-path', action='store_true', help='the DFT-only path instead of the model')
parser.add_argument('--strains', type=float, nargs='*', default=None, help='--dft-path: applied strains in path order')
parser.add_argument('--protocol', default='fast')
parser.add_argument('--code', default='abinit@localhost')
parser.add_argument('--daemon', action='store_true', help='submit to the daemon and return')
args = parser.parse_args()

enable_caching()
if args.dft_path:
    from aiida_mlresponse.workflows.stress_strain_dft import UniaxialDFTPathWorkChain

    builder = UniaxialDFTPathWorkChain.get_builder()
    builder.code = orm.load_code(args.code)
    builder.axis = orm.Str(args.axis)
    builder.strains = orm.List(args.strains or [0.0, -0.01, -0.02, -0.03, -0.04, -0.05])
    builder.protocol = orm.Str(args.protocol)
    builder.metadata.label = f'mg dft uniaxial path {args.axis} {args.protocol}'
else:
    from aiida_mlresponse.workflows.stress_strain import StressStrainWorkChain

    if args.model is None:
        parser.error('give the MODEL (or --dft-path)')
    builder = StressStrainWorkChain.get_builder_from_model(
        orm.load_node(args.model), axis=args.axis, strain_range=(args.min, args.max), step=args.step,
        reference_code=orm.load_code(args.code) if args.reference_strains else None,
        reference_strains=args.reference_strains, protocol=args.protocol)
if args.daemon:
    node = submit(builder)
    print(f'submitted {node.process_label}<{node.pk}>: follow with `verdi process report {node.pk}`')
else:
    results, node = run_get_node(builder)
    if not node.is_finished_ok:
        raise SystemExit(f'{node.process_label}<{node.pk}> failed: exit status {node.exit_status} {node.exit_message}')
    if args.dft_path:
        path = results['path']
        print(f'{node.process_label}<{node.pk}>: path ArrayData<{path.pk}>')
        for row in zip(path.get_array('applied'), path.get_array('sigma_axis'), path.get_array('residual'),
                       path.get_array('converged')):
            print('  ε {:+.4f}  σ_axis {:+8.3f} GPa  |σ_transverse| {:.3f} GPa  converged {}'.format(*row))
    else:
        curve = results['curve']
        print(f'{node.process_label}<{node.pk}>: curve ArrayData<{curve.pk}>, plot SinglefileData<{results["plot"].pk}> '
              f'(`verdi node repo cat {results["plot"].pk} stress_strain.png > curve.png`)')
        print(f'instability: {results["instability"].get_dict()}')
        for row in zip(curve.get_array('applied'), curve.get_array('sigma_axis'), curve.get_array('sigma_axis_band')):
            print('  ε {:+.4f}  σ_axis {:+8.3f} ± {:.3f} GPa'.format(*row))
        if 'reference' in results:
            ref = results['reference']
            print(f'DFT reference (dataset <{ref["dataset"].pk}>): ML - DFT σ_axis '
                  f'{np.round(ref["difference"].get_array("sigma_axis"), 3).tolist()} GPa')
