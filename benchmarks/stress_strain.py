"""Mg under uniaxial stress: DFT-only paths (UniaxialDFTPathWorkChain) and, given a model, its curves.

Settles the two findings of issue 12 with ABINIT alone: the model's x2-compression instability at
ε22 ≈ -0.06, and the x1 load drop at ε11 ≈ -0.033. For each finished DFT path it reports the tangent
stiffness between points, where |σ_axis| peaks (a load drop under strain control = the stress
maximum of a crystal loaded by a stress), and jumps of the relaxed transverse strains. With
`--model PK` (a `ModelData` of kind pcamlp) it also runs `StressStrainWorkChain` along each axis
and puts the committee curve with its band over the DFT points. Writes
benchmarks/results/stress_strain.json and stress_strain.png.

    verdi run workchains/run_mg_stress_strain.py --dft-path --axis x2 --strains 0 -0.01 ... -0.08   # per axis
    nice -n 10 .venv/bin/python benchmarks/stress_strain.py --dft PK_X1 PK_X2 [PK_X3] [--model PK]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'stress_strain.json'
PLOT = RESULTS.with_suffix('.png')
#: the two findings of the model (pcamlp_accuracy on the 648-configuration campaign) that DFT settles
FINDINGS = {'x2': {'model_strain': -0.06, 'what': 'instability under x2 compression (the seed reports one)'},
            'x1': {'model_strain': -0.033, 'what': 'load drop under x1 compression with no softening before it'}}


def _run_end(indices) -> int:
    """Last index of the run of consecutive integers that `indices` starts with."""
    end = int(indices[0])
    while end + 1 in set(indices.tolist()):
        end += 1
    return end


def analyse(applied, sigma, transverse) -> dict:
    """Tangent stiffness, stress maximum (load drop) and transverse-strain jumps of one path, in path order."""
    applied, sigma, transverse = (np.asarray(v, dtype=float) for v in (applied, sigma, transverse))
    order = np.argsort(np.abs(applied), kind='stable')  # outward from zero
    applied, sigma, transverse = applied[order], sigma[order], transverse[order]
    stiffness = np.diff(sigma) / np.diff(applied)  # GPa, between consecutive points
    drop = np.flatnonzero(stiffness <= 0)
    rate = np.linalg.norm(np.diff(transverse, axis=0), axis=1) / np.abs(np.diff(applied))
    jump = np.flatnonzero(rate > 5.0 * np.median(rate[:3]))  # against the first steps: the elastic response
    peak = int(drop[0]) if len(drop) else int(np.argmax(np.abs(sigma)))  # the stress maximum before the first drop
    return {
        'applied': applied.tolist(), 'sigma_axis_GPa': sigma.tolist(), 'transverse': transverse.tolist(),
        'tangent_stiffness_GPa': stiffness.tolist(),
        'tangent_between': [[float(a), float(b)] for a, b in zip(applied[:-1], applied[1:])],
        'load_drop': bool(len(drop)),
        'load_drop_between': [float(applied[drop[0]]), float(applied[_run_end(drop) + 1])] if len(drop) else None,
        'stress_maximum_GPa': float(sigma[peak]), 'stress_maximum_at': float(applied[peak]),
        'transverse_rate_per_step': rate.tolist(),
        'transverse_jump_between': [float(applied[jump[0]]), float(applied[jump[0] + 1])] if len(jump) else None,
    }


def dft_path(nodes) -> dict:
    """One axis from one or more finished UniaxialDFTPathWorkChains (a coarse path and a finer one near a
    feature): points merged by applied strain, outward from zero; at a strain both have, the first node's."""
    paths = [node.outputs.path for node in nodes]
    axes = {path.base.attributes.get('axis') for path in paths}
    if len(axes) != 1:
        raise ValueError(f'paths of different axes given together: {sorted(axes)}')
    names = ('applied', 'sigma_axis', 'transverse', 'residual', 'shear', 'converged', 'steps', 'R')
    arrays = {name: np.concatenate([path.get_array(name) for path in paths]) for name in names}
    _, first = np.unique(np.round(arrays['applied'], 8), return_index=True)
    keep = first[np.argsort(np.abs(arrays['applied'][first]), kind='stable')]
    arrays = {name: value[keep] for name, value in arrays.items()}
    equilibrium = paths[0]
    out = {'axis': axes.pop(), 'workchain_uuids': [node.uuid for node in nodes], 'path_uuids': [path.uuid for path in paths],
           'protocol': nodes[0].inputs.protocol.value,
           'equilibrium_strain': equilibrium.get_array('equilibrium_strain').tolist(),
           'equilibrium_stress_GPa': np.diag(equilibrium.get_array('equilibrium_stress')).tolist(),
           'residual_GPa': arrays['residual'].tolist(), 'shear_GPa': arrays['shear'].tolist(),
           'converged': arrays['converged'].tolist(), 'runs_per_point': arrays['steps'].tolist(),
           'R': arrays['R'].tolist(), 'abinit_runs': sum(len(node.called) for node in nodes)}
    out.update(analyse(arrays['applied'], arrays['sigma_axis'], arrays['transverse']))
    return out


def model_curve(model, axis: str, low: float, step: float) -> dict:
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.stress_strain import StressStrainWorkChain

    results, node = run_get_node(StressStrainWorkChain.get_builder_from_model(model, axis=axis, strain_range=(low, 0.0), step=step))
    curve = results['curve']
    keep = curve.get_array('in_domain')
    out = {'workchain_uuid': node.uuid, 'exit_status': node.exit_status, 'instability': results['instability'].get_dict()}
    for name in ('applied', 'sigma_axis', 'sigma_axis_band', 'transverse', 'transverse_band', 'stiffness', 'stiffness_band',
                 'min_hessian_eigenvalue'):
        out[name] = np.where(keep.reshape(-1, *[1] * (curve.get_array(name).ndim - 1)), curve.get_array(name), np.nan).tolist()
    return out


def plot(paths: dict, models: dict, path):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    axes_names = sorted(paths, key=lambda k: (paths[k]['axis'], k))
    fig, axes = plt.subplots(2, len(axes_names), figsize=(4.3 * len(axes_names), 6.6), squeeze=False)
    for col, name in enumerate(axes_names):
        dft, ax, axt = paths[name], axes[0][col], axes[1][col]
        ax.plot(dft['applied'], dft['sigma_axis_GPa'], 'o-', color='k', ms=4, label=f'DFT ({dft["protocol"]}), transverse σ zeroed')
        a = int(dft['axis'][1])
        others = [k for k in (1, 2, 3) if k != a]
        tr = np.array(dft['transverse'])
        for j, other in enumerate(others):
            axt.plot(dft['applied'], tr[:, j], 'o-', ms=3, label=f'DFT ε{other}{other}')
        if dft['axis'] in models:
            m = models[dft['axis']]
            x, s, b = (np.array(m[k], dtype=float) for k in ('applied', 'sigma_axis', 'sigma_axis_band'))
            line, = ax.plot(x, s, '-', color='C3', label='PCA-MLP committee mean')
            ax.fill_between(x, s - 2 * b, s + 2 * b, color=line.get_color(), alpha=0.25, label='±2 committee std')
            for entry in m['instability'].values():
                if entry['found']:
                    ax.axvline(entry['strain'], color='C3', ls=':', lw=1)
            mt, mb = np.array(m['transverse'], dtype=float), np.array(m['transverse_band'], dtype=float)
            for j, other in enumerate(others):
                axt.plot(x, mt[:, j], '-', color=f'C{j}', lw=1, label=f'model ε{other}{other}')
                axt.fill_between(x, mt[:, j] - 2 * mb[:, j], mt[:, j] + 2 * mb[:, j], color=f'C{j}', alpha=0.2)
        if dft['load_drop_between']:
            ax.axvspan(*sorted(dft['load_drop_between']), color='k', alpha=0.1, label='DFT load drop')
        ax.set_title(f'uniaxial stress along {dft["axis"]}, DFT at `{dft["protocol"]}`', fontsize=9)
        ax.set_xlabel(f'applied strain ε{a}{a} (from the zero-stress cell)')
        ax.set_ylabel(f'σ{a}{a} (GPa)')
        axt.set_xlabel(f'ε{a}{a}')
        axt.set_ylabel('transverse strain')
        ax.legend(fontsize=6)
        axt.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dft', nargs='+', type=int, required=True, help='pks of finished UniaxialDFTPathWorkChains (several per axis are merged)')
    parser.add_argument('--model', default=None, help='ModelData pk or uuid (pcamlp) for the model curves')
    parser.add_argument('--step', type=float, default=0.0025)
    parser.add_argument('--profile', default='mlresponse')
    args = parser.parse_args()

    from aiida import load_profile, orm

    load_profile(args.profile)
    nodes = {}
    for pk in args.dft:
        node = orm.load_node(pk)
        key = f'{node.outputs.path.base.attributes.get("axis")} {node.inputs.protocol.value}'  # e.g. 'x2 fast'
        nodes.setdefault(key, []).append(node)
    paths = {key: dft_path(group) for key, group in nodes.items()}
    models = {}
    model_info = None
    if args.model:
        model = orm.load_node(args.model)
        model_info = {'uuid': model.uuid, 'hyperparameters': model.hyperparameters, 'metadata': model.base.attributes.get('metadata')}
        for axis in sorted({dft['axis'] for dft in paths.values()}):
            low = min(min(dft['applied']) for dft in paths.values() if dft['axis'] == axis)
            models[axis] = model_curve(model, axis, min(low, -0.02), args.step)
    settled = {}
    for key, dft in paths.items():
        name = dft['axis']
        if name not in FINDINGS:
            continue
        finding = FINDINGS[name]
        entry = {'protocol': dft['protocol'], **finding, 'dft_load_drop': dft['load_drop'], 'dft_load_drop_between': dft['load_drop_between'],
                 'dft_stress_maximum_GPa': dft['stress_maximum_GPa'], 'dft_stress_maximum_at': dft['stress_maximum_at'],
                 'dft_transverse_jump_between': dft['transverse_jump_between'], 'dft_strain_range': [min(dft['applied']), max(dft['applied'])]}
        near = [k for k, (a, b) in enumerate(dft['tangent_between']) if min(a, b) <= finding['model_strain'] + 0.01]
        entry['dft_tangent_near_model_strain_GPa'] = {f'{dft["tangent_between"][k][0]:+.4f}..{dft["tangent_between"][k][1]:+.4f}':
                                                      dft['tangent_stiffness_GPa'][k] for k in near}
        if name in models:
            entry['model'] = models[name]['instability']
        settled[key] = entry
    data = {'description': __doc__.split('\n\n')[0], 'machine': platform.node(), 'units': {'stress': 'GPa', 'strain': '1'},
            'strain_convention': 'applied and transverse strains relative to the zero-stress cell of each energy (DFT: the DFT '
                                 'equilibrium at the protocol; model: the model\'s own), 1 + ε = (1 + ε_total)/(1 + ε_eq)',
            'dft_paths': paths, 'model': model_info, 'model_curves': models, 'findings': settled,
            'plot': str(PLOT.relative_to(ROOT))}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1, default=float))
    plot(paths, models, PLOT)
    for name, dft in sorted(paths.items()):
        print(f'{name}: ' + '  '.join(f'{a:+.4f}:{s:+.2f}' for a, s in zip(dft['applied'], dft['sigma_axis_GPa'])))
        print(f'   load drop between {dft["load_drop_between"]}, stress maximum {dft["stress_maximum_GPa"]:.2f} GPa '
              f'at {dft["stress_maximum_at"]:+.4f} (the largest |σ| on the path if no drop), transverse jump between '
              f'{dft["transverse_jump_between"]}')
    print(f'wrote {RESULTS.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}')


if __name__ == '__main__':
    main()
