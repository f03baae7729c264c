"""`StressStrainWorkChain`: the uniaxial stress-strain curve of strained Mg from a PCA-MLP committee.

The model's part is one calcfunction (`uniaxial_curve`), so every number has the model node as its
input. Every member and the committee mean (the model's prediction) each get their own path
(`physics.stress.uniaxial_path_from`): strain relative to that energy's zero-stress cell, the five
other strain components relaxed to zero stress at each step, continuation outward from zero strain
on the compression and the tension branch. The band of a quantity is its spread (population std)
over the members' paths at the same applied strain; the instability (the three signs of
`physics.stress.detect_instability`: soft free-strain Hessian, stress maximum / load drop, jump of
the relaxed strain or positions) is looked for on each branch of the mean path and of every member.

With the `reference` namespace, the mean path's cells at `reference.strains` (deformation and the
predicted positions R as the warm start) are relaxed by ABINIT through `LabelsWorkChain` (kind
`mg_strain`), and `compare_reference` takes the DFT stress from that dataset node: the DFT σ of the
model's cell against the model's Cauchy stress of the same cell (what the F head is trained on),
with the band, and the DFT transverse stresses (zero if the model's relaxed cell is DFT's).
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import WorkChain, calcfunction, if_

from aiida_mlresponse.abinit.exit_codes import STRESS_STRAIN_EXIT_CODES, define_exit_codes
from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.data.model import ModelData
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA
from aiida_mlresponse.workflows.labels import LabelsWorkChain
from aiida_mlresponse.workflows.stress_strain_dft import AXES

#: a model is trusted only where every strain component stays within this (training boxes reach ~0.1)
MAX_STRAIN = 0.15


def strain_grid(low: float, high: float, step: float, extra=()) -> tuple[np.ndarray, np.ndarray]:
    """The compression branch (0, -step, ... down to `low`) and the tension branch (step, ... up to `high`),
    each in continuation order from zero, with the strains of `extra` inserted."""
    values = np.concatenate([np.arange(0.0, low - 1e-12, -step), np.arange(step, high + 1e-12, step), list(extra)])
    values = np.unique(np.round(values, 10))
    return values[values <= 0][::-1], values[values > 0]


def _paths(energy, axis, branches, equilibrium):
    from aiida_mlresponse.physics import stress as st

    return [st.uniaxial_path_from(energy, axis, branch, equilibrium, max_strain=MAX_STRAIN) if len(branch) else None
            for branch in branches]


def _series(paths, key):
    """One array in ascending applied strain from the (compression, tension) branches."""
    parts = []
    for index, path in enumerate(paths):
        if path is None:
            continue
        value = {'sigma': path.sigma, 'strain': path.extra['relative_strain'], 'deformation': path.deformation,
                 'eig': path.min_eigenvalue, 'residual': path.residual_stress, 'converged': path.converged,
                 'in_domain': path.in_domain, 'applied': path.applied}[key]
        parts.append(value[::-1] if index == 0 else value)
    return np.concatenate(parts)


def _instabilities(paths, r_params) -> dict:
    """branch -> {found, strain, signs, reason} of the first instability on each branch."""
    from aiida_mlresponse.physics import stress as st

    out = {}
    offset = 0 if paths[0] is None else len(paths[0].applied)
    for index, (name, path) in enumerate(zip(('compression', 'tension'), paths)):
        if path is None or len(path.applied) < 3:
            continue
        rows = r_params[:offset][::-1] if index == 0 else r_params[offset:]
        found = st.detect_instability(path, rows)
        signs = [sign for sign, hits in (('soft_mode', found.soft_indices), ('stress_maximum', found.peak_indices),
                                         ('jump', found.jump_indices)) if found.found and found.index in set(hits.tolist())]
        out[name] = {'found': found.found, 'strain': found.applied, 'signs': signs, 'reason': found.reason}
    return out


@calcfunction
def uniaxial_curve(model: ModelData, axis: orm.Str, strain_range: orm.List, step: orm.Float,
                   extra_strains: orm.List) -> dict:
    """The committee's uniaxial curve (`curve`, GPa and strains relative to the zero-stress cell) and its
    instabilities (`instability`)."""
    import torch

    from aiida_mlresponse.physics import stress as st
    from aiida_mlresponse.physics.strain import symmetric_form_positions

    net, _ = model.load()
    net = net.double()
    a = AXES[axis.value]
    branches = strain_grid(*strain_range.get_list(), step.value, extra_strains.get_list())
    energies = [net.free_energy] + [lambda d, k=k: net.head_members('F', d)[k, :, 0] for k in range(net.n_members)]
    runs = []
    for energy in energies:
        paths = _paths(energy, a, branches, st.equilibrium_strain(energy))
        deformation = _series(paths, 'deformation')
        with torch.no_grad():
            r_members = net.head_members('R', torch.as_tensor(deformation)).numpy()
        runs.append((paths, deformation, r_members))
    paths, deformation, r_members = runs[0]
    others = [k for k in range(3) if k != a]
    applied = _series(paths, 'applied')
    sigma = np.array([_series(p, 'sigma') for p, _, _ in runs]) * HA_PER_BOHR3_TO_GPA  # (1 + K, n)
    transverse = np.array([_series(p, 'strain')[:, others] for p, _, _ in runs])
    stiffness = np.array([np.gradient(s, applied) if len(applied) > 1 else np.zeros_like(s) for s in sigma])
    r_mean = r_members.mean(0)
    curve = orm.ArrayData()
    for name, value in {
        'applied': applied, 'sigma_axis': sigma[0], 'sigma_axis_band': sigma[1:].std(0),
        'sigma_axis_members': sigma[1:], 'transverse': transverse[0], 'transverse_band': transverse[1:].std(0),
        'stiffness': stiffness[0], 'stiffness_band': stiffness[1:].std(0),
        'strain': _series(paths, 'strain'), 'deformation': deformation,
        'R': r_mean, 'R_band': r_members.std(0), 'xred': symmetric_form_positions(r_mean),
        'min_hessian_eigenvalue': _series(paths, 'eig'),
        'residual_stress': _series(paths, 'residual') * HA_PER_BOHR3_TO_GPA,
        'converged': _series(paths, 'converged'), 'in_domain': _series(paths, 'in_domain'),
    }.items():
        curve.set_array(name, np.asarray(value))
    # the fields along the path: committee spread relative to each field's range (their values stay in the model)
    fields = net.predict(torch.as_tensor(deformation), fields=True)
    spread = {}
    for name in net.field_names:
        mean, std = (fields[key].reshape(len(applied), -1) for key in (name, f'{name}_std'))
        spread[name] = np.sqrt((std**2).mean(1)) / np.ptp(mean, axis=1)
    for name, value in spread.items():
        curve.set_array(f'{name}_relative_spread', value)
    curve.base.attributes.set('axis', axis.value)
    curve.base.attributes.set('units', {'sigma_axis': 'GPa', 'stiffness': 'GPa', 'residual_stress': 'GPa',
                                        'min_hessian_eigenvalue': 'Ha', 'R': 'reduced', 'strain': '1 (Voigt, relative)'})
    curve.base.attributes.set('equilibrium_strain', paths[0 if paths[0] is not None else 1].extra['equilibrium'].tolist())
    instability = _instabilities(paths, r_mean)
    for name, entry in instability.items():  # the members' strains of the same branch: the band of the instability
        strains = [m.get(name, {}).get('strain') for m in (_instabilities(p, r.mean(0)) for p, _, r in runs[1:])]
        found = [s for s in strains if s is not None]
        entry['members_found'] = len(found)
        entry['members_strain'] = strains
        entry['strain_band'] = float(np.std(found)) if found else None
    return {'curve': curve, 'instability': orm.Dict(instability)}


@calcfunction
def reference_configurations(curve: orm.ArrayData, strains: orm.List) -> orm.ArrayData:
    """The model's relaxed cells (D) and positions (R) at `strains`: what ABINIT relaxes for the reference."""
    applied = curve.get_array('applied')
    rows = [int(np.argmin(np.abs(applied - s))) for s in strains.get_list()]
    configurations = orm.ArrayData()
    configurations.set_array('deformations', curve.get_array('deformation')[rows])
    configurations.set_array('R', curve.get_array('R')[rows])
    return configurations


@calcfunction
def compare_reference(model: ModelData, curve: orm.ArrayData, strains: orm.List, dataset: DatasetData) -> orm.ArrayData:
    """ML - DFT at the reference strains: the model's Cauchy stress of the cells ABINIT relaxed, mean and band."""
    from aiida_mlresponse.physics import stress as st

    net, _ = model.load()
    net = net.double()
    a = AXES[curve.base.attributes.get('axis')]
    others = [k for k in range(3) if k != a]
    rows = dataset.rows()
    order = np.argsort(rows['configuration_index'])
    deformation, dft = rows['deformation'][order], rows['stress'][order] * HA_PER_BOHR3_TO_GPA
    members = np.array([st.cauchy_stress(lambda d, k=k: net.head_members('F', d)[k, :, 0], deformation)
                        for k in range(net.n_members)]) * HA_PER_BOHR3_TO_GPA
    ml = st.cauchy_stress(net.free_energy, deformation) * HA_PER_BOHR3_TO_GPA
    applied = np.asarray(strains.get_list(), dtype=float)[rows['configuration_index'][order]]
    out = orm.ArrayData()
    for name, value in {
        'applied': applied, 'dft_stress': dft, 'ml_stress': ml, 'ml_stress_band': members.std(0),
        'dft_sigma_axis': dft[:, a, a], 'ml_sigma_axis': ml[:, a, a], 'ml_sigma_axis_band': members[:, :, a, a].std(0),
        'difference_sigma_axis': ml[:, a, a] - dft[:, a, a], 'difference_stress': ml - dft,
        'dft_transverse_stress': dft[:, others, others], 'deformation': deformation,
    }.items():
        out.set_array(name, np.asarray(value))
    out.set_array('inside_band', np.abs(ml[:, a, a] - dft[:, a, a]) <= 2.0 * members[:, :, a, a].std(0))
    out.base.attributes.set('units', {'stress': 'GPa'})
    return out


@calcfunction
def plot_curve(curve: orm.ArrayData, instability: orm.Dict, **reference) -> orm.SinglefileData:
    """The PNG: curve with its band (±2 std), transverse strains, DFT points, instability marked."""
    import pathlib
    import tempfile

    from aiida_mlresponse.ml.pcamlp.plots import stress_strain

    a = AXES[curve.base.attributes.get('axis')]
    entry = {'axis': a, 'applied': curve.get_array('applied'), 'sigma': curve.get_array('sigma_axis'),
             'sigma_std': curve.get_array('sigma_axis_band'), 'transverse': curve.get_array('transverse'),
             'unstable_at': next((v['strain'] for v in instability.get_dict().values() if v['found']), None)}
    if 'comparison' in reference:
        entry['dft'] = (reference['comparison'].get_array('applied'), reference['comparison'].get_array('dft_sigma_axis'))
    with tempfile.TemporaryDirectory() as tmp:
        path = stress_strain([entry], pathlib.Path(tmp) / 'stress_strain.png', title=f'Mg, uniaxial stress along x{a + 1}',
                             units='GPa')
        return orm.SinglefileData(file=path)


def validate_inputs(inputs, _):
    low, high = inputs['strain_range'].get_list() if 'strain_range' in inputs else (0.0, 0.0)
    if not low <= 0.0 <= high or low == high:
        return f'`strain_range` must be [low, high] with low <= 0 <= high and low < high, got {[low, high]}.'
    if not 0.0 < inputs['step'].value <= (high - low):
        return '`step` must be positive and no larger than the strain range.'
    if max(-low, high) > MAX_STRAIN:
        return f'`strain_range` must lie within ±{MAX_STRAIN} (the model is not trusted beyond).'
    if 'model' in inputs and inputs['model'].kind != 'pcamlp':
        return f'`model` must be a PCA-MLP committee (kind pcamlp), got kind {inputs["model"].kind}.'
    reference = inputs.get('reference', {})
    if reference:
        missing = [name for name in ('code', 'strains') if name not in reference]
        if missing:
            return f'`reference` needs {" and ".join(missing)}.'
        strains = reference['strains'].get_list()
        if not strains or any(not low <= s <= high for s in strains):
            return f'`reference.strains` must be a non-empty list within the strain range {[low, high]}, got {strains}.'


class StressStrainWorkChain(WorkChain):
    """Uniaxial stress-strain curve of Mg from a PCA-MLP model, with a committee band and an optional DFT reference."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('model', valid_type=ModelData, help='A PCA-MLP committee (kind pcamlp) of strained Mg.')
        spec.input('axis', valid_type=orm.Str, default=lambda: orm.Str('x2'),
                   validator=lambda v, _: None if v.value in AXES else f'`axis` must be one of {", ".join(AXES)}.',
                   help='Loading axis of the orthorhombic Mg cell: x1 (a), x2 (b) or x3 (c).')
        spec.input('strain_range', valid_type=orm.List, default=lambda: orm.List([-0.08, 0.0]),
                   help='[low, high] applied strain relative to the model\'s zero-stress cell, low <= 0 <= high.')
        spec.input('step', valid_type=orm.Float, default=lambda: orm.Float(0.005), help='Strain step of the path.')
        spec.input_namespace('reference', required=False, populate_defaults=False,
                             help='DFT reference at chosen strains (off unless given).')
        spec.input('reference.code', valid_type=orm.AbstractCode, required=False, help='The ABINIT code.')
        spec.input('reference.strains', valid_type=orm.List, required=False, help='Applied strains to label with ABINIT.')
        spec.input('reference.protocol', valid_type=orm.Str, default=lambda: orm.Str('fast'), help='Mg protocol.')
        spec.input('reference.max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(1),
                   help='ABINIT runs in flight at once.')
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.evaluate,
            if_(cls.has_reference)(cls.run_reference, cls.inspect_reference),
            cls.plot,
        )
        spec.output('curve', valid_type=orm.ArrayData, help='applied, sigma_axis (GPa), transverse, stiffness, R, ... '
                                                             'each with a `_band` (committee std).')
        spec.output('instability', valid_type=orm.Dict, help='compression / tension: found, strain, signs, reason, band.')
        spec.output('plot', valid_type=orm.SinglefileData, help='stress_strain.png')
        spec.output_namespace('reference', required=False, dynamic=False)
        spec.output('reference.dataset', valid_type=DatasetData, help='The ABINIT relaxations of the model\'s cells.')
        spec.output('reference.difference', valid_type=orm.ArrayData, help='DFT and ML stress and ML - DFT (GPa).')
        define_exit_codes(spec, [c for c in STRESS_STRAIN_EXIT_CODES if c[1] in (
            'ERROR_PATH_NOT_CONVERGED', 'ERROR_DFT_REFERENCE_FAILED')])

    @classmethod
    def get_builder_from_model(cls, model, axis='x2', strain_range=(-0.08, 0.0), step=0.005, reference_code=None,
                               reference_strains=None, protocol='fast', max_concurrent=1):
        builder = cls.get_builder()
        builder.model = model
        builder.axis = orm.Str(axis)
        builder.strain_range = orm.List(list(strain_range))
        builder.step = orm.Float(step)
        if reference_code is not None:
            builder.reference = {'code': reference_code, 'strains': orm.List(list(reference_strains)),
                                 'protocol': orm.Str(protocol), 'max_concurrent': orm.Int(max_concurrent)}
        return builder

    def has_reference(self):
        return bool(self.inputs.get('reference', {}))

    def evaluate(self):
        extra = self.inputs.reference.strains if self.has_reference() else orm.List([])
        results = uniaxial_curve(self.inputs.model, self.inputs.axis, self.inputs.strain_range, self.inputs.step, extra)
        self.ctx.curve = results['curve']
        self.out('curve', results['curve'])
        self.ctx.instability = results['instability']
        self.out('instability', results['instability'])
        for name, entry in results['instability'].get_dict().items():
            self.report(f'{name}: {entry["reason"]}' + (f' at ε = {entry["strain"]:+.4f}' if entry['found'] else ''))
        curve = results['curve']
        bad = ~curve.get_array('converged') & curve.get_array('in_domain')
        if bad.any():
            return self.exit_codes.ERROR_PATH_NOT_CONVERGED.format(
                strains=np.round(curve.get_array('applied')[bad], 4).tolist())

    def run_reference(self):
        reference = self.inputs.reference
        configurations = reference_configurations(self.ctx.curve, reference.strains)
        builder = LabelsWorkChain.get_builder_from_protocol(
            reference.code, configurations, 'mg_strain', protocol=reference.protocol.value,
            max_concurrent=reference.max_concurrent.value)
        builder.min_success_fraction = orm.Float(1.0)
        node = self.submit(builder)
        self.report(f'DFT reference at strains {reference.strains.get_list()}: {node.process_label}<{node.pk}>')
        return self.to_context(labels=node)

    def inspect_reference(self):
        node = self.ctx.labels
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_DFT_REFERENCE_FAILED.format(
                message=f'{node.process_label}<{node.pk}> exit status {node.exit_status}')
        dataset = node.outputs.dataset
        self.ctx.comparison = compare_reference(self.inputs.model, self.ctx.curve, self.inputs.reference.strains, dataset)
        self.out('reference.dataset', dataset)
        self.out('reference.difference', self.ctx.comparison)
        diff = self.ctx.comparison.get_array('difference_sigma_axis')
        self.report(f'ML - DFT σ_axis at the reference strains: {np.round(diff, 3).tolist()} GPa')

    def plot(self):
        extra = {'comparison': self.ctx.comparison} if 'comparison' in self.ctx else {}
        self.out('plot', plot_curve(self.ctx.curve, self.ctx.instability, **extra))
