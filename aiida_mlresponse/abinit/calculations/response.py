"""`AbinitResponseCalculation`: ground state + Berry phase, ddk, and electric-field / phonon response at Γ.

Inputs (ports familiar to aiida-abinit users):
    structure        StructureData, written exactly as given (same cell, orientation, atom order; never
                     symmetrized or reduced), see `inputs.structure_variables`.
    kpoints          KpointsData holding a mesh (`set_kpoints_mesh(mesh, offset)`); `settings.kpoint_shifts`
                     may replace its single offset by several shifts (e.g. the fcc four-shift set).
    parameters       Dict of ABINIT variables (ecut, nstep, diemac, tolerances ...). Dataset numbers are fixed:
                     1 = ground state (+ Berry phase), 2 = ddk, 3 = electric field (+ phonons) at q = 0, so
                     `tolvrs1`, `tolwfr2`, `tolvrs3` set each dataset's tolerance (defaults below).
                     Structure, k-point and file variables are set here and refused in `parameters`.
                     `nband` (if given) is the number of bands of the ground state only: the response
                     datasets always use the occupied bands.
    pseudos          namespace kind name -> Psp8Data.
    response         optional Dict of switches {polarization, dielectric, phonons} (bools); default
                     polarization and dielectric on, phonons off. `phonons` with `dielectric` also
                     gives Born charges.
    reference_polarization  optional ArrayData with an array `polarization` (3,) e/Bohr²: P of the reference
                     structure (e.g. the `output_arrays` of its calculation); the branch of P is fixed
                     against it.
    settings         optional Dict: `kpoint_shifts` (list of 3-vectors, in units of the mesh step),
                     `extra_bands` (empty bands in the ground state, for the gap; default 2).

Outputs: see `parsers.AbinitResponseParser`.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob
from aiida_pseudo.data.pseudo import Psp8Data

from aiida_mlresponse.abinit.inputs import (
    AbinitInputError, structure_variables, validate_cell_and_positions, validate_parameters, write_input,
)

RESPONSE_DEFAULTS = {'polarization': True, 'dielectric': True, 'phonons': False}
SETTINGS_KEYS = {'kpoint_shifts', 'extra_bands'}
# Default tolerance of each dataset, used when `parameters` sets none for it.
DEFAULT_TOLERANCES = {1: ('tolvrs', 1.0e-12), 2: ('tolwfr', 1.0e-16), 3: ('tolvrs', 1.0e-8)}
TOLERANCE_NAMES = ('toldfe', 'toldff', 'tolrff', 'tolvrs', 'tolwfr')
# The variables the CalcJob writes per dataset: a user setting them would break the dataset logic.
RESPONSE_VARIABLES = frozenset(
    {'ndtset', 'jdtset', 'berryopt', 'rfddk', 'rfelfd', 'rfphon', 'rfatpol', 'rfdir', 'nqpt', 'qpt', 'iscf',
     'getwfk', 'getddk', 'irdwfk', 'irdddk', 'optdriver', 'kptopt', 'iomode', 'occopt'}
)
# `FCC_SHIFTS`: ABINIT's four shifts for an fcc primitive cell (the fcc analogue of a shifted cubic grid).
FCC_SHIFTS = [[0.5, 0.5, 0.5], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]


def pseudo_valence(pseudo) -> float:
    """Z of the ion of a psp8 pseudopotential (second line: zatom, zion, pspd)."""
    try:
        return float(pseudo.get_content().splitlines()[1].split()[1])
    except (IndexError, ValueError) as exc:
        raise AbinitInputError(f'cannot read the valence charge of pseudo `{pseudo.filename}`') from exc


def response_switches(response) -> dict:
    """The switches of the `response` input with defaults, validated."""
    values = dict(RESPONSE_DEFAULTS)
    if response is not None:
        given = response.get_dict()
        unknown = set(given) - set(RESPONSE_DEFAULTS)
        if unknown:
            raise AbinitInputError(
                f'unknown `response` keys {sorted(unknown)}; allowed: {sorted(RESPONSE_DEFAULTS)}.'
            )
        for key, value in given.items():
            if not isinstance(value, bool):
                raise AbinitInputError(f'`response.{key}` must be true or false, got {value!r}.')
        values.update(given)
    return values


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


def dataset_variables(switches: dict, natom: int, nocc: int, nband_ground_state: int, parameters: dict) -> dict:
    """The per-dataset variables: DS1 ground state (+ Berry phase), DS2 ddk, DS3 E-field/phonons at Γ."""
    datasets = [1]
    if switches['dielectric']:
        datasets.append(2)
    if switches['dielectric'] or switches['phonons']:
        datasets.append(3)
    variables = {'ndtset': len(datasets), 'jdtset': datasets, 'kptopt': 2, 'nband': nocc, 'nband1': nband_ground_state}
    if switches['polarization']:
        variables.update({'berryopt1': -1, 'rfdir1': [1, 1, 1]})
    if 2 in datasets:
        variables.update({
            'getwfk2': 1, 'rfddk2': 1, 'rfelfd2': 2, 'rfdir2': [1, 1, 1], 'iscf2': -3, 'nqpt2': 1, 'qpt2': [0.0, 0.0, 0.0],
        })
    if 3 in datasets:
        variables.update({'getwfk3': 1, 'rfdir3': [1, 1, 1], 'nqpt3': 1, 'qpt3': [0.0, 0.0, 0.0]})
        if switches['dielectric']:
            variables.update({'getddk3': 2, 'rfelfd3': 3})
        if switches['phonons']:
            variables.update({'rfphon3': 1, 'rfatpol3': [1, natom]})
    given = {name.lower() for name in parameters}
    for dataset in datasets:
        if not any(f'{tol}{dataset}' in given for tol in TOLERANCE_NAMES):
            name, value = DEFAULT_TOLERANCES[dataset]
            variables[f'{name}{dataset}'] = value
    return variables


def validate_response(value, _):
    if value is not None:
        try:
            response_switches(value)
        except AbinitInputError as exc:
            return str(exc)
        if not any(value.get_dict().get(key, default) for key, default in RESPONSE_DEFAULTS.items()):
            return '`response` switches everything off: nothing to compute.'


def validate_parameters_port(value, _):
    if value is None:
        return None
    params = value.get_dict()
    try:
        validate_parameters(params)
    except AbinitInputError as exc:
        return str(exc)
    from aiida_mlresponse.abinit.inputs import base_name

    clashes = sorted(name for name in params if base_name(name.lower()) in RESPONSE_VARIABLES)
    if clashes:
        return (
            f'{clashes} are set by AbinitResponseCalculation from its `response` switches; '
            'remove them from `parameters`.'
        )
    for tol in TOLERANCE_NAMES:
        if tol in {name.lower() for name in params}:
            return (
                f'give `{tol}` with a dataset number ({tol}1 ground state, {tol}2 ddk, {tol}3 response): '
                'one tolerance cannot suit all three datasets.'
            )
    if 'ecut' not in {name.lower() for name in params}:
        return '`parameters` must set `ecut` (Ha).'


def validate_structure(value, _):
    if value is None:
        return None
    try:
        validate_cell_and_positions(
            value.cell, [site.position for site in value.sites], value.pbc
        )
    except AbinitInputError as exc:
        return f'structure: {exc}'


def validate_settings(value, _):
    if value is None:
        return None
    unknown = set(value.get_dict()) - SETTINGS_KEYS
    if unknown:
        return f'unknown `settings` keys {sorted(unknown)}; allowed: {sorted(SETTINGS_KEYS)}.'
    extra = value.get_dict().get('extra_bands', 2)
    if not isinstance(extra, int) or isinstance(extra, bool) or extra < 1:
        return f'`settings.extra_bands` must be a positive integer (it gives the gap), got {extra!r}.'


def validate_reference_polarization(value, _):
    if value is None:
        return None
    if 'polarization' not in value.get_arraynames():
        return '`reference_polarization` must hold an array named `polarization` (3,) in e/Bohr^2.'
    array = np.asarray(value.get_array('polarization'), dtype=float)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        return f'`reference_polarization.polarization` must be 3 finite numbers, got shape {array.shape}.'


def validate_inputs(inputs, _):
    """Checks across ports: every kind has a pseudo, the run is an insulator with enough data to respond."""
    structure = inputs.get('structure')
    pseudos = inputs.get('pseudos', {})
    if structure is None:
        return None
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
    try:
        nelect = sum(pseudo_valence(pseudos[site.kind_name]) for site in structure.sites)
    except AbinitInputError as exc:
        return str(exc)
    if abs(nelect - round(nelect)) > 1e-8 or round(nelect) % 2:
        return (
            f'the structure has {nelect:g} valence electrons: the response calculation needs an insulator '
            'with doubly occupied bands (an even number of electrons).'
        )


class AbinitResponseCalculation(CalcJob):
    """ABINIT: ground state with Berry-phase P, ddk + electric-field response (ε∞), optional Γ phonons (Z*, C)."""

    _INPUT_FILE = 'aiida.abi'
    _OUTPUT_FILE = 'aiida.abo'
    _LOG_FILE = 'aiida.log'
    _PREFIX = 'aiidao'
    _PSEUDO_DIR = 'pseudo'
    GSR_FILE = f'{_PREFIX}_DS1_GSR.nc'
    DDB_NC_FILE = f'{_PREFIX}_DS3_DDB.nc'
    DDB_FILE = f'{_PREFIX}_DS3_DDB'
    OUT_NC_FILE = f'{_PREFIX}_OUT.nc'
    ABORT_FILE = '__ABI_MPIABORTFILE__'
    CPU_LIMIT_MESSAGE = 'CPU time limit exceeded'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, validator=validate_structure,
                   help='The structure, written exactly as given.')
        spec.input('kpoints', valid_type=orm.KpointsData, help='A k-point mesh (with its offset).')
        spec.input('parameters', valid_type=orm.Dict, validator=validate_parameters_port,
                   help='ABINIT variables; dataset 1 ground state, 2 ddk, 3 response at Γ.')
        spec.input_namespace('pseudos', valid_type=Psp8Data, dynamic=True, help='kind name -> psp8 pseudopotential.')
        spec.input('response', valid_type=orm.Dict, required=False, validator=validate_response,
                   help='Switches {polarization, dielectric, phonons}; default P and ε∞.')
        spec.input('reference_polarization', valid_type=orm.ArrayData, required=False,
                   validator=validate_reference_polarization,
                   help='Array `polarization` (3,) e/Bohr^2 of the reference structure, to fix the branch of P.')
        spec.input('settings', valid_type=orm.Dict, required=False, validator=validate_settings,
                   help='`kpoint_shifts`, `extra_bands`.')
        spec.inputs.validator = validate_inputs
        spec.inputs['metadata']['options']['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        spec.inputs['metadata']['options']['parser_name'].default = 'mlresponse.abinit.response'
        spec.inputs['metadata']['options']['input_filename'].default = cls._INPUT_FILE
        spec.inputs['metadata']['options']['output_filename'].default = cls._OUTPUT_FILE
        spec.inputs['metadata']['options']['withmpi'].default = False

        spec.output('output_parameters', valid_type=orm.Dict,
                    help='Scalars with `*_units` keys: energies, gap, volume, electrons, polarization.')
        spec.output('output_arrays', valid_type=orm.ArrayData,
                    help='polarization, dielectric_tensor, born_charges(_raw), force_constants_gamma, forces.')

        spec.exit_code(300, 'ERROR_MISSING_OUTPUT_FILES', invalidates_cache=True,
                       message='ABINIT did not write its main output or log file.')
        spec.exit_code(301, 'ERROR_MISSING_NETCDF', invalidates_cache=True,
                       message='The expected netCDF output {filename} is missing.')
        spec.exit_code(302, 'ERROR_UNREADABLE_NETCDF', invalidates_cache=True,
                       message='An ABINIT output file could not be read: {error}')
        spec.exit_code(303, 'ERROR_OUTPUT_INCOMPLETE', invalidates_cache=True,
                       message='The ABINIT output stops before the end of the run (killed or crashed).')
        spec.exit_code(310, 'ERROR_ABINIT', invalidates_cache=True,
                       message='ABINIT stopped with an error: {error}')
        spec.exit_code(400, 'ERROR_OUT_OF_WALLTIME', invalidates_cache=True,
                       message='The calculation ran out of walltime.')
        spec.exit_code(410, 'ERROR_SCF_NOT_CONVERGED',
                       message='The ground-state SCF did not converge within nstep iterations.')
        spec.exit_code(411, 'ERROR_RESPONSE_NOT_CONVERGED',
                       message='A response (ddk / DFPT) dataset did not converge within nstep iterations.')
        spec.exit_code(420, 'ERROR_NO_GAP',
                       message='The ground state has no gap ({gap_ev} eV): response properties of a metal are meaningless; '
                               'use a denser k-grid or check the structure.')
        spec.exit_code(430, 'ERROR_INVALID_OUTPUT',
                       message='The parsed results are not physical: {error}')

    def prepare_for_submission(self, folder):
        settings = self.inputs.settings.get_dict() if 'settings' in self.inputs else {}
        switches = response_switches(self.inputs.get('response'))
        parameters = {name.lower(): value for name, value in self.inputs.parameters.get_dict().items()}
        structure = self.inputs.structure

        kind_order = [kind.name for kind in structure.kinds]
        znucl = [_atomic_number(structure.get_kind(name).symbol) for name in kind_order]
        cell = np.array(structure.cell)
        positions = np.array([site.position for site in structure.sites])
        kind_names = [site.kind_name for site in structure.sites]

        nelect = sum(pseudo_valence(self.inputs.pseudos[name]) for name in kind_names)
        nocc = int(round(nelect)) // 2
        nband_gs = int(parameters.pop('nband', nocc + settings.get('extra_bands', 2)))
        if nband_gs <= nocc:
            raise AbinitInputError(f'`nband` = {nband_gs} leaves no empty band above the {nocc} occupied ones: no gap.')

        pseudo_files = {name: f'{name}.psp8' for name in kind_order}
        variables = {}
        variables.update(structure_variables(cell, positions, kind_names, kind_order, znucl))
        variables.update(kpoint_variables(self.inputs.kpoints, settings))
        variables['pp_dirpath'] = self._PSEUDO_DIR
        variables['pseudos'] = ', '.join(pseudo_files[name] for name in kind_order)
        variables['iomode'] = 3  # netCDF outputs
        variables['occopt'] = 1  # insulator: response at Γ of doubly occupied bands
        variables.update(dataset_variables(switches, len(kind_names), nocc, nband_gs, parameters))
        variables.update(parameters)

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
            (self.inputs.pseudos[name].uuid, self.inputs.pseudos[name].filename, f'{self._PSEUDO_DIR}/{file}')
            for name, file in pseudo_files.items()
        ]
        calcinfo.remote_copy_list = []
        walltime = self.inputs.metadata.options.get('max_wallclock_seconds')
        computer = self.inputs.code.computer
        if walltime and computer is not None and computer.scheduler_type == 'core.direct':
            # The direct scheduler does not enforce max_wallclock_seconds. A soft CPU-time limit (serial run:
            # CPU time <= wall time) stops a runaway ABINIT with SIGXCPU, which the parser reports as walltime.
            calcinfo.prepend_text = f'ulimit -S -t {int(walltime)}'
        calcinfo.retrieve_list = [self._OUTPUT_FILE, self._LOG_FILE, self.ABORT_FILE]
        # The netCDF files (MBs each, mostly padding) are parsed into nodes and then dropped.
        calcinfo.retrieve_temporary_list = [self.GSR_FILE, self.DDB_NC_FILE, self.DDB_FILE, self.OUT_NC_FILE]
        return calcinfo


def _atomic_number(symbol: str) -> int:
    from aiida.common.constants import elements

    return next(number for number, data in elements.items() if data['symbol'] == symbol)
