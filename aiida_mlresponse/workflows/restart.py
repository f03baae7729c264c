"""`AbinitResponseBaseWorkChain`: runs `AbinitResponseCalculation` and restarts it after known failures.

Inputs: the calculation's inputs under the `abinit` namespace (structure, kpoints, parameters, pseudos,
response, reference_polarization, settings, metadata.options), plus `max_iterations` and
`clean_workdir` of BaseRestartWorkChain. Outputs: those of the calculation (`output_parameters`,
`output_arrays`; see `abinit.parsers`), from its last, successful run.

Handlers (in the style of aiida-quantumespresso's PwBaseWorkChain):
- SCF (ground state) not converged: double nstep, halve diemix (more conservative mixing), restart.
- response (ddk / DFPT) not converged: double nstep, restart.
- out of walltime: double max_wallclock_seconds, restart.

Build it from a protocol:
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(code, structure, protocol='fast',
                  overrides={'parameters': {'ecut': 20}}, response={'phonons': True})
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler, while_

from aiida_mlresponse.abinit.calculations import FCC_SHIFTS, RESPONSE_DEFAULTS, AbinitResponseCalculation
from aiida_mlresponse.abinit.inputs import AbinitInputError, validate_cell_and_positions, validate_parameters
from aiida_mlresponse.abinit.protocols import RESPONSE_PROTOCOLS, ProtocolError, get_protocol_inputs

DEFAULT_NSTEP = 30  # ABINIT's default
DEFAULT_DIEMIX = 1.0  # ABINIT's default for norm-conserving pseudos
MIN_DIEMIX = 0.1


def kpoints_from_protocol(structure, spec: Mapping):
    """(KpointsData, settings) from a protocol's `kpoints` entry: `mesh` or `distance`, and `shifts`."""
    kpoints = orm.KpointsData()
    kpoints.set_cell_from_structure(structure)
    shifts = spec.get('shifts', 'gamma')
    if shifts == 'gamma':
        shift_list = [[0.0, 0.0, 0.0]]
    elif shifts == 'fcc4':
        shift_list = [list(shift) for shift in FCC_SHIFTS]
    elif isinstance(shifts, list) and shifts and all(isinstance(s, list) and len(s) == 3 for s in shifts):
        shift_list = [[float(x) for x in s] for s in shifts]
    else:
        raise ProtocolError(f'k-point `shifts` must be `gamma`, `fcc4` or a list of 3-vectors, got {shifts!r}.')
    if 'mesh' in spec:
        mesh = [int(n) for n in spec['mesh']]
        if len(mesh) != 3 or min(mesh) < 1:
            raise ProtocolError(f'k-point `mesh` must be three positive integers, got {spec["mesh"]!r}.')
        kpoints.set_kpoints_mesh(mesh, offset=shift_list[0])
    elif 'distance' in spec:
        kpoints.set_kpoints_mesh_from_density(float(spec['distance']), offset=shift_list[0])
    else:
        raise ProtocolError('a protocol `kpoints` entry needs `mesh` or `distance`.')
    settings = {'kpoint_shifts': shift_list} if len(shift_list) > 1 else {}
    return kpoints, settings


class AbinitRestartWorkChain(BaseRestartWorkChain):
    """What the package's ABINIT restart WorkChains share: the calculation's inputs under `abinit`,
    its outputs exposed, the restart loop, and parameter updates between runs. Subclasses set
    `_process_class` and add the handlers for their calculation's exit codes."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace='abinit')
        spec.expose_outputs(cls._process_class)
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.exit_code(300, 'ERROR_UNRECOVERABLE_FAILURE',
                       message='The calculation failed with an error no handler can fix.')

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, 'abinit'))

    def _update_parameters(self, **changes):
        parameters = self.ctx.inputs.parameters.get_dict()
        parameters.update(changes)
        self.ctx.inputs.parameters = orm.Dict(parameters)


class AbinitResponseBaseWorkChain(AbinitRestartWorkChain):
    """Restart wrapper of AbinitResponseCalculation (unconverged SCF/response, walltime)."""

    _process_class = AbinitResponseCalculation

    @process_handler(priority=600, exit_codes=[AbinitResponseCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED])
    def handle_scf_not_converged(self, node):
        """Double nstep and mix more conservatively, then run again."""
        parameters = self.ctx.inputs.parameters.get_dict()
        nstep = 2 * int(parameters.get('nstep', DEFAULT_NSTEP))
        diemix = max(MIN_DIEMIX, 0.5 * float(parameters.get('diemix', DEFAULT_DIEMIX)))
        self._update_parameters(nstep=nstep, diemix=diemix)
        self.report(f'{node.process_label}<{node.pk}>: SCF not converged; restarting with nstep={nstep}, diemix={diemix}')
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=590, exit_codes=[AbinitResponseCalculation.exit_codes.ERROR_RESPONSE_NOT_CONVERGED])
    def handle_response_not_converged(self, node):
        """Double nstep (it also bounds the DFPT and ddk cycles), then run again."""
        nstep = 2 * int(self.ctx.inputs.parameters.get_dict().get('nstep', DEFAULT_NSTEP))
        self._update_parameters(nstep=nstep)
        self.report(f'{node.process_label}<{node.pk}>: response not converged; restarting with nstep={nstep}')
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=580, exit_codes=[
        AbinitResponseCalculation.exit_codes.ERROR_OUT_OF_WALLTIME,
        AbinitResponseCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME,
    ])
    def handle_out_of_walltime(self, node):
        """Run again with twice the walltime (the run is short-lived per configuration; no checkpoint kept)."""
        options = dict(self.ctx.inputs.metadata.get('options', {}))
        walltime = 2 * int(options.get('max_wallclock_seconds') or 3600)
        options['max_wallclock_seconds'] = walltime
        self.ctx.inputs.metadata['options'] = options
        self.report(f'{node.process_label}<{node.pk}>: out of walltime; restarting with max_wallclock_seconds={walltime}')
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=100, exit_codes=[
        AbinitResponseCalculation.exit_codes.ERROR_ABINIT,
        AbinitResponseCalculation.exit_codes.ERROR_NO_GAP,
        AbinitResponseCalculation.exit_codes.ERROR_INVALID_OUTPUT,
    ])
    def handle_unrecoverable(self, node):
        """Errors a restart cannot fix: stop at once with the calculation's message."""
        self.report(f'{node.process_label}<{node.pk}> failed: {node.exit_message}')
        return ProcessHandlerReport(do_break=True, exit_code=self.exit_codes.ERROR_UNRECOVERABLE_FAILURE)

    @classmethod
    def get_protocol_filepath(cls):
        return RESPONSE_PROTOCOLS

    @classmethod
    def get_builder_from_protocol(cls, code, structure, protocol: str | None = None, overrides: Mapping | None = None,
                                  response: Mapping | None = None, reference_polarization=None,
                                  options: Mapping | None = None, **kwargs):
        """A builder with the inputs of `protocol` for `structure` (see protocols/response.yaml).

        - overrides: deep-merged over the resolved protocol entry, e.g. {'parameters': {'ecut': 20},
          'kpoints': {'mesh': [4, 4, 4]}, 'pseudo_family': ..., 'options': {...}, 'max_iterations': 3}.
        - response: switches {polarization, dielectric, phonons} (defaults: P and ε∞ on, phonons off).
        - reference_polarization: ArrayData with `polarization` (3,), e.g. the reference run's `output_arrays`.
        - options: CalcJob metadata options merged over the protocol's.
        Raises ValueError subclasses (ProtocolError, AbinitInputError, PseudoSetupError) with a clear
        message for an unknown protocol, an element no installed family covers, or a bad structure.
        """
        from aiida_mlresponse.abinit.pseudos import pseudos_for_structure

        if kwargs:
            raise TypeError(f'get_builder_from_protocol got unexpected arguments {sorted(kwargs)}.')
        validate_cell_and_positions(structure.cell, [site.position for site in structure.sites], structure.pbc)
        elements = sorted({kind.symbol for kind in structure.kinds})
        inputs = get_protocol_inputs(RESPONSE_PROTOCOLS, protocol, overrides, elements)
        parameters = dict(inputs.get('parameters', {}))
        validate_parameters(parameters)
        if 'pseudo_family' not in inputs:
            raise ProtocolError(f'protocol `{inputs["protocol"]}` names no `pseudo_family`.')
        pseudos = pseudos_for_structure(structure, inputs['pseudo_family'])
        kpoints, settings = kpoints_from_protocol(structure, inputs.get('kpoints', {}))
        switches = dict(RESPONSE_DEFAULTS)
        switches.update(response or {})
        unknown = set(switches) - set(RESPONSE_DEFAULTS)
        if unknown:
            raise AbinitInputError(f'unknown `response` keys {sorted(unknown)}; allowed: {sorted(RESPONSE_DEFAULTS)}.')

        builder = cls.get_builder()
        builder.abinit.code = code
        builder.abinit.structure = structure
        builder.abinit.kpoints = kpoints
        builder.abinit.parameters = orm.Dict(parameters)
        builder.abinit.pseudos = pseudos
        builder.abinit.response = orm.Dict(switches)
        if settings:
            builder.abinit.settings = orm.Dict(settings)
        if reference_polarization is not None:
            if not isinstance(reference_polarization, orm.ArrayData):
                array = orm.ArrayData()
                array.set_array('polarization', np.asarray(reference_polarization, dtype=float))
                reference_polarization = array
            builder.abinit.reference_polarization = reference_polarization
        merged_options = {'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1}, 'withmpi': False}
        merged_options.update(inputs.get('options', {}))
        merged_options.update(options or {})
        builder.abinit.metadata.options = merged_options
        builder.max_iterations = orm.Int(int(inputs.get('max_iterations', 5)))
        builder.metadata.label = f'{inputs["protocol"]}:{inputs["system"] or "default"}'
        return builder
