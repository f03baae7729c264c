"""Restart work chains of the package's ABINIT CalcJobs, in the style of aiida-quantumespresso's PwBaseWorkChain.

`AbinitBaseWorkChain` holds what they share: the calculation's inputs under the `abinit` namespace, its
outputs exposed (`remote_folder` optional: a calculation finished after a daemon hard-kill may lack it),
the protocol builder, and the handlers below, tuned by the class-level `defaults` table.

| handler (priority)                  | exit codes                         | action                                        |
| unrecoverable (600)                 | ABINIT error, no gap, checks      | stop with ERROR_UNRECOVERABLE_FAILURE         |
| out of walltime (590)               | scheduler 120, ERROR_OUT_OF_WALLTIME | walltime x `walltime_factor`, continue       |
| relaxation not converged (580)      | ERROR_RELAXATION_NOT_CONVERGED    | ntime x `ntime_factor`, continue (relax only) |
| SCF not converged (570)             | ERROR_SCF_NOT_CONVERGED           | nstep x `nstep_factor`, diemix x `diemix_factor` (floor `diemix_minimum`) |
| response not converged (560)        | ERROR_RESPONSE_NOT_CONVERGED      | nstep x `nstep_factor` (response only)        |

"Continue" means: a relaxation restarts from its last positions (`output_structure`, read from the HIST
file even of a killed run); the response calculation has no state worth keeping and simply runs again.

    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(code, structure, protocol='fast',
                  overrides={'parameters': {'ecut': 20}}, response={'phonons': True})
    builder = MgRelaxBaseWorkChain.get_builder_from_protocol(code, deformation=D, protocol='fast')
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, CalcJob, ProcessHandlerReport, ToContext, append_, process_handler, while_

from aiida_mlresponse.abinit.calculations.base import AbinitCalculation
from aiida_mlresponse.abinit.calculations.relax import MgRelaxCalculation
from aiida_mlresponse.abinit.calculations.response import RESPONSE_DEFAULTS, AbinitResponseCalculation
from aiida_mlresponse.abinit.exit_codes import RESTART_EXIT_CODES, define_exit_codes
from aiida_mlresponse.abinit.inputs import AbinitInputError
from aiida_mlresponse.abinit.protocols import (
    MG_PROTOCOLS, RESPONSE_PROTOCOLS, ProtocolError, get_protocol_inputs, kpoints_from_protocol,
)
from aiida_mlresponse.workflows.launch import adopted

CODES = AbinitCalculation.exit_codes  # one table: the same numbers on every ABINIT CalcJob


class AbinitBaseWorkChain(BaseRestartWorkChain):
    """Run an ABINIT CalcJob (`_process_class`) and restart it after the failures the handlers know."""

    _process_class = AbinitCalculation
    _protocol_file = None

    defaults = AttributeDict({
        'nstep': 30,  # ABINIT's default, when `parameters` set none
        'nstep_factor': 2,
        'diemix': 1.0,  # ABINIT's default for norm-conserving pseudos
        'diemix_factor': 0.5,  # gentler mixing after an unconverged SCF ...
        'diemix_minimum': 0.1,  # ... but never below this
        'ntime': 30,  # relaxation steps, when `parameters` set none (the protocols always do)
        'ntime_factor': 2,
        'walltime': 3600,  # s, when the options set none
        'walltime_factor': 2,
    })

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace='abinit')
        spec.expose_outputs(cls._process_class)
        spec.outputs['remote_folder'].required = False
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        define_exit_codes(spec, RESTART_EXIT_CODES)

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, 'abinit'))

    def run_process(self):
        """aiida-core's launch, unless this iteration's CalcJob was launched before a daemon kill (`launch.py`)."""
        node = adopted(self, f'iteration_{self.ctx.iteration + 1:02d}')
        if node is None:
            return super().run_process()
        self.ctx.iteration += 1
        handlers = self.node.base.extras.get(self._considered_handlers_extra, [])  # one list per iteration
        self.node.base.extras.set(self._considered_handlers_extra, handlers + [[] for _ in range(self.ctx.iteration - len(handlers))])
        return ToContext(children=append_(node))

    # -- protocol builder ------------------------------------------------------------------------

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: Mapping | None = None, elements=None) -> dict:
        """The resolved protocol entry (see `abinit.protocols`) for a structure of these elements."""
        return get_protocol_inputs(cls._protocol_file, protocol, overrides, elements)

    @classmethod
    def _builder_from_protocol(cls, code, structure, protocol, overrides, options=None):
        """A builder with everything the protocol gives; a subclass adds its own inputs."""
        from aiida_mlresponse.abinit.pseudos import pseudos_for_structure

        inputs = cls.get_protocol_inputs(protocol, overrides, sorted({kind.symbol for kind in structure.kinds}))
        parameters = dict(inputs.get('parameters', {}))
        cls._process_class.check_inputs(structure, parameters)
        if 'pseudo_family' not in inputs:
            raise ProtocolError(f'protocol `{inputs["protocol"]}` names no `pseudo_family`.')
        pseudos = pseudos_for_structure(structure, inputs['pseudo_family'])
        kpoints, settings = kpoints_from_protocol(structure, inputs.get('kpoints', {}))

        builder = cls.get_builder()
        builder.abinit.code = code
        builder.abinit.structure = structure
        builder.abinit.kpoints = kpoints
        builder.abinit.parameters = orm.Dict(parameters)
        builder.abinit.pseudos = pseudos
        if settings:
            builder.abinit.settings = orm.Dict(settings)
        for key, value in {**inputs.get('options', {}), **(options or {})}.items():
            builder.abinit.metadata.options[key] = value  # one by one: the CalcJob's defaults fill the rest
        for key, node_type in (('max_iterations', orm.Int), ('clean_workdir', orm.Bool)):
            if key in inputs:
                builder[key] = node_type(inputs[key])
        builder.metadata.label = f'{inputs["protocol"]}:{inputs["system"] or "default"}'
        return builder

    # -- handlers ----------------------------------------------------------------------------------

    def _update_parameters(self, **changes):
        parameters = self.ctx.inputs.parameters.get_dict()
        parameters.update(changes)
        self.ctx.inputs.parameters = orm.Dict(parameters)

    def _continue_from(self, node):
        """Make the next run continue where `node` stopped (nothing to keep by default)."""

    @process_handler(priority=600, exit_codes=[
        CODES.ERROR_ABINIT, CODES.ERROR_NO_GAP, CODES.ERROR_UNPHYSICAL_OUTPUT, CODES.ERROR_GRID_MISMATCH,
        CODES.ERROR_SYMMETRIC_FORM_BROKEN, CODES.ERROR_INTEGRAL_CHECK_FAILED,
    ])
    def handle_unrecoverable(self, node):
        """Errors a restart cannot fix (ABINIT refused the input, the results fail a check): stop at once."""
        self.report(f'{node.process_label}<{node.pk}> failed: {node.exit_message}')
        return ProcessHandlerReport(do_break=True, exit_code=self.exit_codes.ERROR_UNRECOVERABLE_FAILURE)

    @process_handler(priority=590, exit_codes=[
        CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME, CODES.ERROR_OUT_OF_WALLTIME,
    ])
    def handle_out_of_walltime(self, node):
        """Killed at its walltime (by the scheduler, or by the CPU-time limit on the direct scheduler):
        run again with `walltime_factor` times the walltime, continuing where the run stopped."""
        options = dict(self.ctx.inputs.metadata.get('options', {}))
        walltime = int(self.defaults.walltime_factor * int(options.get('max_wallclock_seconds') or self.defaults.walltime))
        options['max_wallclock_seconds'] = walltime
        self.ctx.inputs.metadata['options'] = options
        self._continue_from(node)
        self.report(f'{node.process_label}<{node.pk}> ran out of walltime; restarting with max_wallclock_seconds={walltime}')
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=570, exit_codes=CODES.ERROR_SCF_NOT_CONVERGED)
    def handle_scf_not_converged(self, node):
        """SCF not converged within nstep: `nstep_factor` times the steps and gentler mixing (diemix times
        `diemix_factor`, not below `diemix_minimum`), continuing where the run stopped."""
        parameters = self.ctx.inputs.parameters.get_dict()
        nstep = int(self.defaults.nstep_factor * int(parameters.get('nstep', self.defaults.nstep)))
        diemix = max(self.defaults.diemix_minimum,
                     self.defaults.diemix_factor * float(parameters.get('diemix', self.defaults.diemix)))
        self._update_parameters(nstep=nstep, diemix=diemix)
        self._continue_from(node)
        self.report(f'{node.process_label}<{node.pk}>: SCF not converged; restarting with nstep={nstep}, diemix={diemix}')
        return ProcessHandlerReport(do_break=True)


class AbinitResponseBaseWorkChain(AbinitBaseWorkChain):
    """Restart wrapper of AbinitResponseCalculation (P, ε∞, Z*, Γ force constants)."""

    _process_class = AbinitResponseCalculation
    _protocol_file = RESPONSE_PROTOCOLS

    @process_handler(priority=560, exit_codes=CODES.ERROR_RESPONSE_NOT_CONVERGED)
    def handle_response_not_converged(self, node):
        """A ddk / DFPT cycle not converged: `nstep_factor` times nstep (it also bounds those cycles)."""
        nstep = int(self.defaults.nstep_factor * int(self.ctx.inputs.parameters.get_dict().get('nstep', self.defaults.nstep)))
        self._update_parameters(nstep=nstep)
        self.report(f'{node.process_label}<{node.pk}>: response not converged; restarting with nstep={nstep}')
        return ProcessHandlerReport(do_break=True)

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
        message for an unknown protocol or key, an element no installed family covers, or a bad structure.
        """
        if kwargs:
            raise TypeError(f'get_builder_from_protocol got unexpected arguments {sorted(kwargs)}.')
        switches = {**RESPONSE_DEFAULTS, **(response or {})}
        unknown = set(switches) - set(RESPONSE_DEFAULTS)
        if unknown:
            raise AbinitInputError(f'unknown `response` keys {sorted(unknown)}; allowed: {sorted(RESPONSE_DEFAULTS)}.')
        builder = cls._builder_from_protocol(code, structure, protocol, overrides, options)
        builder.abinit.response = orm.Dict(switches)
        if reference_polarization is not None:
            if not isinstance(reference_polarization, orm.ArrayData):
                array = orm.ArrayData()
                array.set_array('polarization', np.asarray(reference_polarization, dtype=float))
                reference_polarization = array
            builder.abinit.reference_polarization = reference_polarization
        return builder


class MgRelaxBaseWorkChain(AbinitBaseWorkChain):
    """Restart wrapper of MgRelaxCalculation: every restart continues from the last positions."""

    _process_class = MgRelaxCalculation
    _protocol_file = MG_PROTOCOLS

    def _continue_from(self, node):
        if 'output_structure' in node.outputs:
            self.ctx.inputs.structure = node.outputs.output_structure

    @process_handler(priority=580, exit_codes=CODES.ERROR_RELAXATION_NOT_CONVERGED)
    def handle_relaxation_not_converged(self, node):
        """Forces above tolmxf after ntime steps: `ntime_factor` times the steps, from the last positions."""
        ntime = int(self.defaults.ntime_factor * int(self.ctx.inputs.parameters.get_dict().get('ntime', self.defaults.ntime)))
        self._update_parameters(ntime=ntime)
        self._continue_from(node)
        self.report(f'{node.process_label}<{node.pk}>: relaxation not converged; restarting from the last '
                    f'positions with ntime={ntime}')
        return ProcessHandlerReport(do_break=True)

    @classmethod
    def get_builder_from_protocol(cls, code, deformation=None, structure=None, protocol=None, overrides=None,
                                  options: Mapping | None = None):
        """Builder for deformation D (or a structure that is the Mg reference cell) at `protocol`
        (test|fast|moderate|precise, see protocols/mg.yaml); `overrides` as for the response work chain."""
        from aiida_mlresponse.abinit.mg import mg_structure

        if (structure is None) == (deformation is None):
            raise ValueError('give either a `structure` or a `deformation`.')
        if structure is None:
            structure = mg_structure(deformation)
        return cls._builder_from_protocol(code, structure, protocol, overrides, options)


__all__ = ['AbinitBaseWorkChain', 'AbinitResponseBaseWorkChain', 'MgRelaxBaseWorkChain']
