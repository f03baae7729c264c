"""`UniaxialDFTPathWorkChain`: a uniaxial-stress path of strained Mg from ABINIT alone (no model).

The reference the model's curves are judged against (issue 12). First the DFT equilibrium: the three
normal strains of the orthorhombic cell where the three normal stresses vanish. Then, for each applied
strain ε (relative to that equilibrium) along the loading axis, the two transverse normal strains
where the transverse stresses vanish, by quasi-Newton steps: each step is one `MgRelaxBaseWorkChain`
(ions relaxed at fixed cell), the Jacobian ∂σ/∂ε starts from Mg's elastic constants and is
updated by Broyden's rule after every run, and a new applied strain starts from the tangent
predictor of the last point. Shears stay zero (the orthorhombic cell keeps its right angles); the
shear stresses of every run are recorded, so a path that wants to shear shows it.

The path is made by a calcfunction from the `output_arrays` of the runs that ended each point, so
every number of it leads back to its ABINIT run.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import WorkChain, calcfunction, while_

from aiida_mlresponse.abinit.exit_codes import STRESS_STRAIN_EXIT_CODES, define_exit_codes
from aiida_mlresponse.abinit.mg import mg_structure
from aiida_mlresponse.physics.stress import (
    MG_ELASTIC_GUESS_GPA,
    broyden_update,
    relative_strain,
    total_strain,
)
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA
from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

AXES = {'x1': 0, 'x2': 1, 'x3': 2}
#: largest change of a strain component in one quasi-Newton step (a bad Jacobian must not throw the cell away)
MAX_STEP = 0.02


def validate_strains(value, _):
    values = value.get_list()
    if not values or not all(isinstance(v, (int, float)) for v in values):
        return '`strains` must be a non-empty list of numbers.'
    if any(abs(v) > 0.15 for v in values):
        return '`strains` must lie within ±0.15 (the Mg relaxations are set up for small deformations).'


class UniaxialDFTPathWorkChain(WorkChain):
    """σ_axis(ε_axis) of Mg under uniaxial stress, transverse stresses zeroed by ABINIT runs alone."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The ABINIT code.')
        spec.input('axis', valid_type=orm.Str, default=lambda: orm.Str('x2'),
                   validator=lambda v, _: None if v.value in AXES else f'`axis` must be one of {", ".join(AXES)}.',
                   help='Loading axis of the orthorhombic cell: x1 (a), x2 (b, both basal) or x3 (c).')
        spec.input('strains', valid_type=orm.List, validator=validate_strains,
                   help='Applied strains along the axis, relative to the DFT equilibrium, in path order.')
        spec.input('protocol', valid_type=orm.Str, default=lambda: orm.Str('fast'), help='Mg protocol (protocols/mg.yaml).')
        spec.input('stress_tolerance', valid_type=orm.Float, default=lambda: orm.Float(0.05),
                   help='GPa: a point is done when every stress that should vanish is below this.')
        spec.input('max_steps', valid_type=orm.Int, default=lambda: orm.Int(6),
                   help='ABINIT runs per point at most (the last one is kept, marked not converged).')
        spec.outline(
            cls.setup,
            while_(cls.has_point)(cls.run_step, cls.inspect_step),
            cls.results,
        )
        spec.output('path', valid_type=orm.ArrayData,
                    help='applied, strain (n, 3) and transverse strains relative to the equilibrium, stress (n, 3, 3) '
                         'GPa, sigma_axis GPa, residual GPa, converged, steps; equilibrium_strain (3,) of the reference cell.')
        define_exit_codes(spec, [c for c in STRESS_STRAIN_EXIT_CODES if c[1] == 'ERROR_DFT_EQUILIBRIUM_FAILED'])

    def setup(self):
        self.ctx.axis = AXES[self.inputs.axis.value]
        self.ctx.point = -1  # -1: the equilibrium, then the index into `strains`
        # plain lists in the context (it is checkpointed): normal strains of the reference cell now being run,
        # the warm-start R and the Jacobian ∂σ/∂ε (Ha/Bohr³)
        self.ctx.strain = [0.0, 0.0, 0.0]
        self.ctx.r_params = [0.0, 0.0, 0.0]
        self.ctx.jacobian = (np.asarray(MG_ELASTIC_GUESS_GPA) / HA_PER_BOHR3_TO_GPA).tolist()
        self.ctx.last = None  # (strain, normal stresses) of the last run, for the Broyden update
        self.ctx.steps = 0
        self.ctx.ends = {}  # point label -> (node, converged, steps)

    def has_point(self):
        return self.ctx.point < len(self.inputs.strains.get_list())

    def _free(self):
        free = np.ones(3, dtype=bool)
        if self.ctx.point >= 0:
            free[self.ctx.axis] = False
        return free

    def run_step(self):
        deformation = np.concatenate([1.0 + np.array(self.ctx.strain), [90.0, 90.0, 90.0]])
        builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
            self.inputs.code, structure=mg_structure(deformation, self.ctx.r_params), protocol=self.inputs.protocol.value)
        label = 'equilibrium' if self.ctx.point < 0 else f'point_{self.ctx.point}'
        builder.metadata.call_link_label = f'{label}_step_{self.ctx.steps}'
        self.ctx.steps += 1
        return self.to_context(run=self.submit(builder))

    def inspect_step(self):
        node = self.ctx.run
        label = 'equilibrium' if self.ctx.point < 0 else f'point_{self.ctx.point}'
        if not node.is_finished_ok:
            self.report(f'{label}: {node.process_label}<{node.pk}> failed (exit status {node.exit_status})')
            if self.ctx.point < 0:
                return self.exit_codes.ERROR_DFT_EQUILIBRIUM_FAILED.format(message=f'{node.process_label}<{node.pk}>')
            self._advance(None, False)  # leave the point out, go on from the last good state
            return None
        arrays = node.outputs.output_arrays
        stress = arrays.get_array('stress')
        normal = np.diag(stress).copy()
        strain = np.array(self.ctx.strain)
        self.ctx.r_params = arrays.get_array('R').tolist()
        if self.ctx.last is not None:
            last_strain, last_normal = (np.array(v) for v in self.ctx.last)
            self.ctx.jacobian = broyden_update(np.array(self.ctx.jacobian), strain - last_strain, normal - last_normal).tolist()
        self.ctx.last = [strain.tolist(), normal.tolist()]
        free = self._free()
        residual = np.max(np.abs(np.concatenate([normal[free], stress[[1, 0, 0], [2, 2, 1]]]))) * HA_PER_BOHR3_TO_GPA
        normal_residual = np.max(np.abs(normal[free])) * HA_PER_BOHR3_TO_GPA
        self.report(f'{label} step {self.ctx.steps}: strain {np.round(strain, 5).tolist()}, normal stress '
                    f'{np.round(normal * HA_PER_BOHR3_TO_GPA, 3).tolist()} GPa (largest one to zero {normal_residual:.3f}, '
                    f'with shears {residual:.3f})')
        if normal_residual < self.inputs.stress_tolerance.value or self.ctx.steps >= self.inputs.max_steps.value:
            self._advance(node, normal_residual < self.inputs.stress_tolerance.value)
        else:
            self._step()

    def _step(self, wanted_axis=None):
        """Quasi-Newton from the last run: free components so that σ_free = 0 to first order, the axis
        component moved to `wanted_axis` (a new point) or kept (another step at the same point)."""
        free = self._free()
        base, normal = (np.array(v) for v in self.ctx.last)
        jac = np.array(self.ctx.jacobian)
        delta = np.zeros(3)
        if wanted_axis is not None:
            delta[self.ctx.axis] = wanted_axis - base[self.ctx.axis]
        rhs = -normal[free] - jac[np.ix_(free, ~free)] @ delta[~free]
        delta[free] = np.clip(np.linalg.solve(jac[np.ix_(free, free)], rhs), -MAX_STEP, MAX_STEP)
        self.ctx.strain = (base + delta).tolist()

    def _advance(self, node, converged):
        label = 'equilibrium' if self.ctx.point < 0 else f'point_{self.ctx.point}'
        if node is not None:
            self.ctx.ends[label] = [node.uuid, bool(converged), self.ctx.steps]
        if self.ctx.point < 0:
            self.ctx.equilibrium = list(self.ctx.last[0])
        self.ctx.point += 1
        self.ctx.steps = 0
        if not self.has_point():
            return
        target = np.zeros(3)
        target[self.ctx.axis] = self.inputs.strains.get_list()[self.ctx.point]
        self._step(float(total_strain(np.array(self.ctx.equilibrium), target)[self.ctx.axis]))

    def results(self):
        inputs = {'axis': self.inputs.axis, 'strains': self.inputs.strains,
                  'ends': orm.Dict({label: {'converged': c, 'steps': s} for label, (_, c, s) in self.ctx.ends.items()})}
        for label, (uuid, _, _) in self.ctx.ends.items():
            inputs[label] = orm.load_node(uuid).outputs.output_arrays
        path = collect_dft_path(**inputs)
        self.out('path', path)
        sigma = path.get_array('sigma_axis')
        self.report(f'path <{path.pk}>: {len(sigma)} points, σ_axis {np.round(sigma, 3).tolist()} GPa')


@calcfunction
def collect_dft_path(axis: orm.Str, strains: orm.List, ends: orm.Dict, equilibrium: orm.ArrayData, **points) -> orm.ArrayData:
    """The path from the `output_arrays` of the run that ended each point (`point_<i>`), strains relative to
    the equilibrium run's cell."""
    a = AXES[axis.value]
    eq = equilibrium.get_array('deformation')[:3] - 1.0
    labels = sorted(points, key=lambda k: int(k.split('_')[1]))
    meta = ends.get_dict()
    stress = np.array([points[k].get_array('stress') for k in labels]) * HA_PER_BOHR3_TO_GPA
    total = np.array([points[k].get_array('deformation')[:3] - 1.0 for k in labels]).reshape(-1, 3)
    strain = relative_strain(eq, total)
    others = [k for k in range(3) if k != a]
    path = orm.ArrayData()
    path.set_array('applied', np.array([strains.get_list()[int(k.split('_')[1])] for k in labels], dtype=float))
    path.set_array('strain', strain)
    path.set_array('transverse', strain[:, others] if len(labels) else np.zeros((0, 2)))
    path.set_array('stress', stress)
    path.set_array('sigma_axis', stress[:, a, a] if len(labels) else np.zeros(0))
    path.set_array('residual', np.array([np.abs(s[others, others]).max() for s in stress]))
    path.set_array('shear', np.array([np.abs(s[[1, 0, 0], [2, 2, 1]]).max() for s in stress]))
    path.set_array('converged', np.array([meta[k]['converged'] for k in labels], dtype=bool))
    path.set_array('steps', np.array([meta[k]['steps'] for k in labels], dtype=int))
    path.set_array('R', np.array([points[k].get_array('R') for k in labels]).reshape(-1, 3))
    path.set_array('equilibrium_strain', eq)
    path.set_array('equilibrium_stress', equilibrium.get_array('stress') * HA_PER_BOHR3_TO_GPA)
    path.base.attributes.set('axis', axis.value)
    path.base.attributes.set('units', {'stress': 'GPa', 'sigma_axis': 'GPa', 'residual': 'GPa', 'strain': '1'})
    path.base.attributes.set('calculations', [points[k].creator.uuid for k in labels])
    return path
