"""`AbinitCalculation`: what every ABINIT CalcJob of the package shares.

Input ports, familiar to aiida-abinit users:
    structure   StructureData, written exactly as given (same cell, orientation, atom order; never
                symmetrized or reduced), see `inputs.structure_variables`.
    kpoints     KpointsData holding a mesh (`set_kpoints_mesh(mesh, offset)`).
    parameters  Dict of ABINIT variables; the structure, k-point, file and pseudo variables (and those a
                subclass writes itself, `_RESERVED`) are refused.
    pseudos     namespace kind name -> pseudopotential.
    settings    optional Dict; the keys a subclass accepts are `_SETTINGS_KEYS`.

Also shared: the file names, the exit-code table (`abinit.exit_codes`), the pseudos copied from the
repository, and the walltime: the direct scheduler does not enforce `max_wallclock_seconds`, so a soft
CPU-time limit of the same length is written into the job script (serial run: CPU time <= wall time).
ABINIT then dies of SIGXCPU, which the parser reports as `ERROR_OUT_OF_WALLTIME`.
A subclass writes its variables (`abinit_variables`) and names the files it retrieves.
"""

from __future__ import annotations

import pathlib

import numpy as np
from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob
from aiida_pseudo.data.pseudo import PseudoPotentialData

from aiida_mlresponse.abinit.exit_codes import CALCULATION_EXIT_CODES, define_exit_codes
from aiida_mlresponse.abinit.inputs import (
    RESERVED_VARIABLES, AbinitInputError, structure_variables, validate_cell_and_positions, validate_parameters,
    write_input,
)
from aiida_mlresponse.data import structure_to_arrays

PREFIX = 'aiidao'  # ABINIT's output prefix: files are aiidao_DS<n>_<KIND>.nc


def kpoint_variables(kpoints, settings: dict) -> dict:
    """ngkpt / nshiftk / shiftk of a KpointsData mesh, optionally with several shifts from the settings."""
    try:
        mesh, offset = kpoints.get_kpoints_mesh()
    except AttributeError as exc:
        raise AbinitInputError('`kpoints` must be a mesh (KpointsData.set_kpoints_mesh), not a list of k-points.') from exc
    if any(int(n) < 1 for n in mesh):
        raise AbinitInputError(f'the k-point mesh {list(mesh)} must have at least one division along each vector.')
    shifts = settings.get('kpoint_shifts', [list(offset)])
    shifts = np.asarray(shifts, dtype=float)
    if shifts.ndim != 2 or shifts.shape[1] != 3 or len(shifts) == 0 or not np.all(np.isfinite(shifts)):
        raise AbinitInputError(f'`settings.kpoint_shifts` must be a list of 3-vectors, got {settings.get("kpoint_shifts")!r}.')
    return {'ngkpt': [int(n) for n in mesh], 'nshiftk': len(shifts), 'shiftk': shifts.tolist()}


def validate_structure(value, _):
    if value is None:
        return None
    try:
        validate_cell_and_positions(value.cell, [site.position for site in value.sites], value.pbc)
    except AbinitInputError as exc:
        return f'structure: {exc}'


# Options that are shell text by design (several lines allowed); every other string option becomes one line
# of the job script (a `#SBATCH` directive, a file name) and must not start a line of its own.
SHELL_TEXT_OPTIONS = frozenset({'prepend_text', 'append_text', 'custom_scheduler_commands'})


def validate_options(options) -> str | None:
    """A message when a one-line option holds a newline, carriage return or NUL (it would inject a shell line)."""

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from strings(item)

    for name, value in (options or {}).items():
        if name not in SHELL_TEXT_OPTIONS and any(c in text for text in strings(value) for c in '\n\r\0'):
            return f'`metadata.options.{name}` = {value!r}: newlines, carriage returns and NUL are not allowed.'
    return None


def atomic_number(symbol: str) -> int:
    from aiida.common.constants import elements

    return next(number for number, data in elements.items() if data['symbol'] == symbol)


class AbinitCalculation(CalcJob):
    """Base of the package's ABINIT CalcJobs (not registered itself: run a subclass)."""

    _INPUT_FILE = 'aiida.abi'
    _OUTPUT_FILE = 'aiida.abo'
    _LOG_FILE = 'aiida.log'
    _PSEUDO_DIR = 'pseudo'
    ABORT_FILE = '__ABI_MPIABORTFILE__'
    CPU_LIMIT_MESSAGE = 'CPU time limit exceeded'  # what bash writes when SIGXCPU kills ABINIT

    _PARSER_NAME: str | None = None
    _PSEUDO_TYPE = PseudoPotentialData
    _SETTINGS_KEYS: frozenset = frozenset()
    _RESERVED: frozenset = RESERVED_VARIABLES
    _RETRIEVE_FILES: tuple = ()
    _RETRIEVE_TEMPORARY_FILES: tuple = ()  # parsed into nodes, then dropped (netCDF files are MBs each)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, validator=validate_structure,
                   help='The structure, written exactly as given.')
        spec.input('kpoints', valid_type=orm.KpointsData, help='A k-point mesh (with its offset).')
        spec.input('parameters', valid_type=orm.Dict, validator=cls.validate_parameters_port,
                   help='ABINIT variables.')
        spec.input_namespace('pseudos', valid_type=cls._PSEUDO_TYPE, dynamic=True,
                             help='kind name -> pseudopotential.')
        spec.input('settings', valid_type=orm.Dict, required=False, validator=cls.validate_settings_port,
                   help=f'Optional settings: {sorted(cls._SETTINGS_KEYS)}.')
        spec.inputs.validator = cls.validate_inputs
        options = spec.inputs['metadata']['options']
        options['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        options['withmpi'].default = False
        options['input_filename'].default = cls._INPUT_FILE
        options['output_filename'].default = cls._OUTPUT_FILE
        if cls._PARSER_NAME:
            options['parser_name'].default = cls._PARSER_NAME
        define_exit_codes(spec, CALCULATION_EXIT_CODES)

    @classmethod
    def check_inputs(cls, structure, parameters: dict) -> None:
        """Raise `AbinitInputError` for a structure or `parameters` this CalcJob refuses (builders call it
        before anything is submitted; the ports check the same)."""
        validate_cell_and_positions(structure.cell, [site.position for site in structure.sites], structure.pbc)
        validate_parameters(parameters, reserved=cls._RESERVED)

    @classmethod
    def validate_parameters_port(cls, value, _):
        if value is None:
            return None
        try:
            validate_parameters(value.get_dict(), reserved=cls._RESERVED)
        except AbinitInputError as exc:
            return str(exc)

    @classmethod
    def validate_settings_port(cls, value, _):
        if value is None:
            return None
        unknown = set(value.get_dict()) - cls._SETTINGS_KEYS
        if unknown:
            return f'unknown `settings` keys {sorted(unknown)}; allowed: {sorted(cls._SETTINGS_KEYS)}.'

    @classmethod
    def validate_inputs(cls, inputs, _=None):
        """One-line options hold one line; every kind has a pseudo for its element, none is left over, and the
        k-points are a usable mesh."""
        message = validate_options(inputs.get('metadata', {}).get('options'))
        if message:
            return message
        structure = inputs.get('structure')
        if structure is None:
            return None
        pseudos = inputs.get('pseudos', {})
        kinds = [kind.name for kind in structure.kinds]
        missing = sorted(set(kinds) - set(pseudos))
        if missing:
            return f'no pseudopotential given for kind(s) {missing} (pseudos has {sorted(pseudos)}).'
        extra = sorted(set(pseudos) - set(kinds))
        if extra:
            return f'pseudos given for kind(s) {extra} that the structure does not have.'
        for kind in structure.kinds:
            pseudo = pseudos[kind.name]
            if pseudo.element != kind.symbol:
                return f'kind `{kind.name}` is {kind.symbol} but its pseudo `{pseudo.filename}` is for {pseudo.element}.'
        if 'kpoints' in inputs:
            try:
                kpoint_variables(inputs['kpoints'], inputs['settings'].get_dict() if 'settings' in inputs else {})
            except AbinitInputError as exc:
                return str(exc)
        return None

    # -- what a subclass uses to write its variables -------------------------------------------

    @property
    def settings(self) -> dict:
        return self.inputs.settings.get_dict() if 'settings' in self.inputs else {}

    def pseudo_files(self) -> dict[str, str]:
        """kind name -> file name in the pseudo folder (the kind name, with the pseudo's own suffix)."""
        return {
            kind.name: f'{kind.name}{pathlib.Path(self.inputs.pseudos[kind.name].filename).suffix or ".psp8"}'
            for kind in self.inputs.structure.kinds
        }

    def structure_variables(self) -> dict:
        """natom, typat, znucl, rprim, xred ... of the structure exactly as given (kinds in `structure.kinds` order)."""
        structure = self.inputs.structure
        cell, positions, _, kind_names = structure_to_arrays(structure)
        kind_order = [kind.name for kind in structure.kinds]
        znucl = [atomic_number(structure.get_kind(name).symbol) for name in kind_order]
        return structure_variables(cell, positions, kind_names, kind_order, znucl)

    def kpoint_variables(self) -> dict:
        return kpoint_variables(self.inputs.kpoints, self.settings)

    def pseudo_variables(self) -> dict:
        files = self.pseudo_files()
        return {'pp_dirpath': self._PSEUDO_DIR, 'pseudos': ', '.join(files[kind.name] for kind in self.inputs.structure.kinds)}

    def abinit_variables(self) -> dict:
        """Every variable of the input file, in the order it is written."""
        raise NotImplementedError

    # -- submission ----------------------------------------------------------------------------

    def prepare_for_submission(self, folder):
        variables = self.abinit_variables()
        folder.get_subfolder(self._PSEUDO_DIR, create=True)
        with folder.open(self._INPUT_FILE, 'w') as handle:
            handle.write(write_input(variables))

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [self._INPUT_FILE]
        codeinfo.stdout_name = self._LOG_FILE
        codeinfo.join_files = True  # stderr into the log: ABINIT's error messages end up there

        calcinfo = datastructures.CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = [
            (self.inputs.pseudos[kind].uuid, self.inputs.pseudos[kind].filename, f'{self._PSEUDO_DIR}/{name}')
            for kind, name in self.pseudo_files().items()
        ]
        calcinfo.remote_copy_list = []
        walltime = self.inputs.metadata.options.get('max_wallclock_seconds')
        computer = self.inputs.code.computer
        if walltime and computer is not None and computer.scheduler_type == 'core.direct':
            calcinfo.prepend_text = f'ulimit -S -t {int(walltime)}'
        calcinfo.retrieve_list = [self._OUTPUT_FILE, self._LOG_FILE, self.ABORT_FILE, *self._RETRIEVE_FILES]
        calcinfo.retrieve_temporary_list = list(self._RETRIEVE_TEMPORARY_FILES)
        return calcinfo
