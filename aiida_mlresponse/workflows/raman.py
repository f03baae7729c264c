"""`RamanWorkChain`: Γ phonons, LO-TO and the powder Raman spectrum from a radnet committee, with its band, against
an optional DFT reference at the same settings.

As in the radnet paper the phonons come from ABINIT (DFPT force constants of the equilibrium cell) and the
response from the models: ε∞, Z* = Ω ∂P/∂τ and ∂χ/∂τ by autograd, member by member for the committee band.
In `reference: dft` mode ABINIT also gives ε∞ and Z* (DFPT, the same equilibrium run) and ∂χ/∂τ by central
differences of DFPT ε∞ over the displacements the crystal's symmetry leaves irreducible (zincblende: one atom along
one axis, two runs), labelled through `LabelsWorkChain` so they are a dataset like any other labels.

Outline: equilibrium structure at the requested lattice -> DFPT at equilibrium (+ the displaced labels) -> ML
analysis (calcfunction) -> DFT analysis (calcfunction) -> comparison table and plot (calcfunction). The steps are
in `raman_steps.py`.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, if_

from aiida_mlresponse.data.model import ModelData
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM
from aiida_mlresponse.workflows import raman_steps as steps
from aiida_mlresponse.workflows.labels import LabelsWorkChain
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

REFERENCE_MODES = ('off', 'dft')
LATTICE_CHOICES = ('relaxed', 'paper', 'structure')


def validate_lattice(value, _):
    if isinstance(value, orm.Str) and value.value not in LATTICE_CHOICES:
        return f'`lattice` must be one of {LATTICE_CHOICES} or a cubic lattice constant in Å (Float), got {value.value!r}'
    if isinstance(value, orm.Float) and not 0.0 < value.value < 20.0:
        return f'`lattice` as a number is the cubic lattice constant in Å, got {value.value}'


def validate_q_directions(value, _):
    directions = np.asarray(value.get_list(), dtype=float) if value is not None else None
    if directions is not None and (directions.ndim != 2 or directions.shape[1] != 3 or len(directions) == 0
                                   or np.any(np.linalg.norm(directions, axis=1) == 0)):
        return '`q_directions` must be a list of non-zero Cartesian 3-vectors, e.g. [[1, 0, 0], [0, 1, 0], [0, 0, 1]]'


def validate_inputs(inputs, _):
    """Everything a run would trip on later, before any ABINIT run: model kinds and targets, the cell the models
    were trained on against the structure at the requested lattice, positive settings."""
    models = inputs.get('models', {})
    for target, name in (('polarization', 'polarization'), ('dielectric', 'dielectric')):
        model = models.get(name)
        if model is None:
            continue
        if not model.kind.startswith('radnet'):
            return f'`models.{name}` is a `{model.kind}` model; the Raman work chain needs radnet committees'
        metadata = model.base.attributes.get('metadata', {})
        if metadata.get('target') != target:
            return f'`models.{name}` predicts `{metadata.get("target")}`, not `{target}`'
        if model.hyperparameters.get('n_members', 0) < 2:
            return f'`models.{name}` has fewer than 2 members: no committee band'
    if 'structure' in inputs and models:
        structure, lattice = inputs['structure'], inputs.get('lattice', orm.Str('relaxed'))
        cell, _, symbols, _ = steps.structure_to_arrays(structure)
        try:
            a_bohr, source = steps.lattice_target_bohr(symbols, cell, lattice.value)
            scale = a_bohr / steps.cubic_lattice_bohr(cell)
        except ValueError as exc:
            return str(exc)
        for name, model in models.items():
            trained = np.asarray(model.base.attributes.get('metadata', {}).get('cell_bohr'))
            if trained.shape != (3, 3) or not np.allclose(trained, cell * scale * ANGSTROM_TO_BOHR, atol=1e-4):
                return (f'`models.{name}` was trained on the cell {np.round(trained, 4).tolist()} Bohr; the structure at '
                        f'lattice `{source}` (a = {a_bohr:.4f} Bohr) has another: train at this lattice or choose '
                        f'`lattice` {np.round(steps.cubic_lattice_bohr(trained * BOHR_TO_ANGSTROM) * BOHR_TO_ANGSTROM, 5)} (Å)')
    for name in ('temperature', 'laser_wavelength', 'broadening', 'finite_difference_step'):
        if name in inputs and not inputs[name].value > 0 and not (name == 'temperature' and inputs[name].value == 0):
            return f'`{name}` must be positive, got {inputs[name].value}'
    if 'reference' in inputs and inputs['reference'].value not in REFERENCE_MODES:
        return f'`reference` must be one of {REFERENCE_MODES}, got {inputs["reference"].value!r}'


class RamanWorkChain(WorkChain):
    """Raman spectrum, LO-TO and Z* of a polar crystal from P and ε∞ committees, with bands and a DFT reference."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='The equilibrium structure (atom order of the models).')
        spec.input('lattice', valid_type=(orm.Str, orm.Float), default=lambda: orm.Str('relaxed'), validator=validate_lattice,
                   help='relaxed (the protocols\' functional and potentials, physics.crystals), paper, structure (as '
                        'given), or the cubic lattice constant in Å; the structure is scaled to it and it is recorded.')
        spec.input_namespace('models', help='The radnet committees, trained on this cell.')
        spec.input('models.polarization', valid_type=ModelData, help='P committee (gives Z*).')
        spec.input('models.dielectric', valid_type=ModelData, help='ε∞ committee (gives ∂χ/∂τ).')
        spec.input('code', valid_type=orm.AbstractCode, help='ABINIT: DFPT phonons at Γ (and the DFT reference).')
        spec.input('protocol', valid_type=orm.Str, default=lambda: orm.Str('fast'), help='ABINIT protocol of every DFT run.')
        spec.input('overrides', valid_type=orm.Dict, required=False, help='Deep-merged over the protocol entry.')
        spec.input('q_directions', valid_type=orm.List, required=False, validator=validate_q_directions,
                   help='Directions of q → 0 for LO-TO and the powder average (Cartesian; default x, y, z).')
        spec.input('temperature', valid_type=orm.Float, default=lambda: orm.Float(300.0), help='K (Bose factor).')
        spec.input('laser_wavelength', valid_type=orm.Float, default=lambda: orm.Float(532.0), help='nm.')
        spec.input('broadening', valid_type=orm.Float, default=lambda: orm.Float(4.0), help='Lorentzian FWHM, cm^-1.')
        spec.input('reference', valid_type=orm.Str, default=lambda: orm.Str('off'),
                   help='off, or dft: ε∞, Z* and ∂χ/∂τ from ABINIT alone at the same settings, and ML - DFT.')
        spec.input('finite_difference_step', valid_type=orm.Float, default=lambda: orm.Float(0.02),
                   help='Displacement (Bohr) of the central differences of ε∞ in the DFT reference.')
        spec.input('max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(2), help='ABINIT jobs at once.')
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.run_equilibrium,
            cls.inspect_equilibrium,
            if_(cls.has_reference)(cls.run_displaced, cls.inspect_displaced),
            cls.analyse,
        )
        spec.output('lattice', valid_type=orm.Dict, help='The lattice used: a in Bohr and Å, and its source.')
        spec.output('equilibrium_arrays', valid_type=orm.ArrayData,
                    help='The DFPT equilibrium run: force constants, masses, ε∞, Z*.')
        spec.output_namespace('ml', help='Committee result: `arrays` (tensors, frequencies, spectra, bands), `peaks`.')
        spec.output('ml.arrays', valid_type=orm.ArrayData)
        spec.output('ml.peaks', valid_type=orm.Dict)
        spec.output_namespace('dft', required=False, help='DFT reference (reference: dft): `arrays`, `peaks`, `labels`.')
        spec.output('dft.arrays', valid_type=orm.ArrayData, required=False)
        spec.output('dft.peaks', valid_type=orm.Dict, required=False)
        spec.output('dft.labels', valid_type=orm.Data, required=False, help='The displaced labels (a dataset).')
        spec.output('comparison', valid_type=orm.Dict, help='ML ± band (and DFT, ML - DFT, covered), experiment.')
        spec.output('plot', valid_type=orm.SinglefileData, help='PNG: ML spectrum with band over the DFT one.')
        spec.exit_code(486, 'ERROR_EQUILIBRIUM_FAILED', message='The DFPT run at equilibrium failed: {message}')
        spec.exit_code(487, 'ERROR_DISPLACED_LABELS_FAILED',
                       message='The displaced DFT runs of the reference failed or are incomplete: {message}')

    def setup(self):
        results = steps.equilibrium_structure(self.inputs.structure, self.inputs.lattice)
        self.ctx.structure = results['structure']
        self.ctx.lattice = results['lattice_used']
        self.out('lattice', self.ctx.lattice)
        self.report(f'equilibrium at a = {results["lattice_used"]["a_bohr"]:.4f} Bohr '
                    f'({results["lattice_used"]["source"]}); reference: {self.inputs.reference.value}')

    def _overrides(self):
        return self.inputs.overrides.get_dict() if 'overrides' in self.inputs else None

    def run_equilibrium(self):
        builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
            self.inputs.code, self.ctx.structure, protocol=self.inputs.protocol.value, overrides=self._overrides(),
            response={'polarization': True, 'dielectric': True, 'phonons': True})
        node = self.submit(builder)
        self.report(f'DFPT at equilibrium (ε∞, Z*, Γ force constants): {node.process_label}<{node.pk}>')
        return ToContext(equilibrium=node)

    def inspect_equilibrium(self):
        node = self.ctx.equilibrium
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_EQUILIBRIUM_FAILED.format(
                message=f'{node.process_label}<{node.pk}> exit status {node.exit_status}')
        self.out('equilibrium_arrays', node.outputs.output_arrays)

    def has_reference(self):
        return self.inputs.reference.value == 'dft'

    def run_displaced(self):
        self.ctx.configurations = steps.finite_difference_configurations(self.ctx.structure,
                                                                         self.inputs.finite_difference_step)
        builder = LabelsWorkChain.get_builder_from_protocol(
            self.inputs.code, self.ctx.configurations, 'response', reference=self.ctx.structure,
            protocol=self.inputs.protocol.value, overrides=self._overrides(),
            max_concurrent=self.inputs.max_concurrent.value)
        builder.reference_arrays = self.ctx.equilibrium.outputs.output_arrays  # the equilibrium run is the reference
        builder.min_success_fraction = orm.Float(1.0)  # a finite difference needs both sides of every displacement
        node = self.submit(builder)
        count = len(self.ctx.configurations.get_array('positions'))
        self.report(f'DFT reference: {count} displaced ε∞ runs (symmetry-reduced, ±'
                    f'{self.inputs.finite_difference_step.value} Bohr): {node.process_label}<{node.pk}>')
        return ToContext(displaced=node)

    def inspect_displaced(self):
        node = self.ctx.displaced
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_DISPLACED_LABELS_FAILED.format(
                message=f'{node.process_label}<{node.pk}> exit status {node.exit_status}')
        if len(node.outputs.failed.get_dict()):
            return self.exit_codes.ERROR_DISPLACED_LABELS_FAILED.format(
                message=f'configurations {sorted(node.outputs.failed.get_dict())} left out')

    def analyse(self):
        phonons = self.ctx.equilibrium.outputs.output_arrays
        settings = orm.Dict({
            'q_directions': self.inputs.q_directions.get_list() if 'q_directions' in self.inputs else np.eye(3).tolist(),
            'temperature_k': self.inputs.temperature.value, 'laser_wavelength_nm': self.inputs.laser_wavelength.value,
            'broadening_cm1': self.inputs.broadening.value,
        })
        ml = steps.ml_raman(self.ctx.structure, self.inputs.models.polarization, self.inputs.models.dielectric,
                            phonons, settings)
        self.out('ml.arrays', ml['arrays'])
        self.out('ml.peaks', ml['peaks'])
        dft = {}
        if self.has_reference():
            labels = self.ctx.displaced.outputs.dataset
            dft = steps.dft_raman(self.ctx.structure, phonons, self.ctx.configurations, labels, settings)
            self.out('dft.arrays', dft['arrays'])
            self.out('dft.peaks', dft['peaks'])
            self.out('dft.labels', labels)
        compared = steps.compare_raman(self.ctx.lattice, ml['arrays'], ml['peaks'], **dft)
        self.out('comparison', compared['comparison'])
        self.out('plot', compared['plot'])
        for line in summary_lines(compared['comparison'].get_dict()):
            self.report(line)


def summary_lines(comparison: dict) -> list[str]:
    """The comparison table as text: one line per quantity, ML ± band [DFT, ML - DFT], and the experiment."""
    lines = []
    for name, row in comparison['rows'].items():
        line = f'{name}: ML {row["ml"]:.5g} ± {row["band"]:.2g}'
        if 'dft' in row:
            line += (f'; DFT {row["dft"]:.5g}; ML - DFT {row["difference"]:+.3g} ({100 * row["relative_difference"]:+.2f} %)'
                     f'{"" if row["covered"] else "  <- outside the band"}')
        lines.append(line)
    if comparison.get('experiment_cm1'):
        lines.append('experiment (room temperature, for context): ' + ', '.join(
            f'{label} {value} cm^-1' for label, value in comparison['experiment_cm1'].items()))
    return lines
