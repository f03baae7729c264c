"""`AbinitResponseCalculation`: ground state + Berry phase, ddk, and electric-field / phonon response at Γ.

Inputs (ports familiar to aiida-abinit users):
    structure        StructureData, written exactly as given (same cell, orientation, atom order; never
                     symmetrized or reduced), see `inputs.structure_variables`.
    kpoints          KpointsData holding a mesh (`set_kpoints_mesh(mesh, offset)`); `settings.kpoint_shifts`
                     may replace its single offset by several shifts (e.g. the fcc four-shift set).
    parameters       Dict of ABINIT variables (ecut, nstep, diemac, tolerances ...). Dataset numbers are fixed:
                     1 = ground state (+ Berry phase), 2 = ddk, 3 = electric field (+ phonons) at q = 0,
                     4 = non-SCF bands at the gap k-points (always run, see `GAP_KPOINTS`), so `tolvrs1`,
                     `tolwfr2`, `tolvrs3`, `tolwfr4` set each dataset's tolerance (defaults below).
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

Ports, files, walltime and exit codes shared with every ABINIT CalcJob: `calculations.base`.
Outputs: see `parsers.response.AbinitResponseParser`.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida_pseudo.data.pseudo import Psp8Data

from aiida_mlresponse.abinit.calculations.base import PREFIX, AbinitCalculation
from aiida_mlresponse.abinit.inputs import AbinitInputError, base_name

RESPONSE_DEFAULTS = {'polarization': True, 'dielectric': True, 'phonons': False}
# Default tolerance of each dataset, used when `parameters` sets none for it.
DEFAULT_TOLERANCES = {1: ('tolvrs', 1.0e-12), 2: ('tolwfr', 1.0e-16), 3: ('tolvrs', 1.0e-8), 4: ('tolwfr', 1.0e-12),
                      5: ('tolwfr', 1.0e-14)}
# The gap check's k-points (reduced): Γ and the seven other time-reversal-invariant points (half reciprocal
# vectors), where band extrema of any cell sit by symmetry; in the fcc primitive cell: Γ, the four L and the
# three X points. The ground-state grids of the protocols (fcc four-shift) contain none of them, and a band
# inversion at Γ (LDA GaAs at a too large lattice) leaves their grid gap open: ABINIT then fills the bands as
# for an insulator and ε∞ never converges with the grid.
GAP_KPOINTS = [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5],
               [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.5, 0.5, 0.5]]
TOLERANCE_NAMES = ('toldfe', 'toldff', 'tolrff', 'tolvrs', 'tolwfr')
# The variables the CalcJob writes per dataset: a user setting them would break the dataset logic.
RESPONSE_VARIABLES = frozenset(
    {'ndtset', 'jdtset', 'berryopt', 'rfddk', 'rfelfd', 'rfphon', 'rfatpol', 'rfdir', 'nqpt', 'qpt', 'iscf',
     'getwfk', 'getddk', 'getden', 'irdwfk', 'irdddk', 'optdriver', 'kptopt', 'nkpt', 'kpt', 'wtk', 'iomode',
     'occopt'}
)


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


def dataset_variables(switches: dict, natom: int, nocc: int, nband_ground_state: int, parameters: dict,
                      polarization_mesh: list[int] | None = None) -> dict:
    """The per-dataset variables: DS1 ground state (+ Berry phase), DS2 ddk, DS3 E-field/phonons at Γ, DS4 bands
    at `GAP_KPOINTS` from the DS1 density (non-SCF, for the gap check), and with `polarization_mesh` DS5: the Berry
    phase again, non-SCF from the DS1 density on that denser mesh (same shifts), for `extrapolate_k_mesh`."""
    datasets = [1]
    if switches['dielectric']:
        datasets.append(2)
    if switches['dielectric'] or switches['phonons']:
        datasets.append(3)
    datasets.append(4)
    if switches['polarization'] and polarization_mesh is not None:
        datasets.append(5)
    variables = {
        'ndtset': len(datasets), 'jdtset': datasets, 'kptopt': 2, 'nband': nocc, 'nband1': nband_ground_state,
        'nband4': nband_ground_state, 'getden4': 1, 'iscf4': -2, 'kptopt4': 0, 'nkpt4': len(GAP_KPOINTS),
        'kpt4': GAP_KPOINTS,
    }
    if switches['polarization']:
        variables.update({'berryopt1': -1, 'rfdir1': [1, 1, 1]})
    if 5 in datasets:
        variables.update({'getden5': 1, 'iscf5': -2, 'berryopt5': -1, 'rfdir5': [1, 1, 1], 'ngkpt5': list(polarization_mesh)})
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


def validate_reference_polarization(value, _):
    if value is None:
        return None
    if 'polarization' not in value.get_arraynames():
        return '`reference_polarization` must hold an array named `polarization` (3,) in e/Bohr^2.'
    array = np.asarray(value.get_array('polarization'), dtype=float)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        return f'`reference_polarization.polarization` must be 3 finite numbers, got shape {array.shape}.'


class AbinitResponseCalculation(AbinitCalculation):
    """ABINIT: ground state with Berry-phase P, ddk + electric-field response (ε∞), optional Γ phonons (Z*, C)."""

    _PARSER_NAME = 'mlresponse.abinit.response'
    _PSEUDO_TYPE = Psp8Data  # the valence charge is read from the psp8 header
    _SETTINGS_KEYS = frozenset({'kpoint_shifts', 'extra_bands', 'polarization_mesh_factor'})
    GSR_FILE = f'{PREFIX}_DS1_GSR.nc'
    GAP_GSR_FILE = f'{PREFIX}_DS4_GSR.nc'
    DENSE_GSR_FILE = f'{PREFIX}_DS5_GSR.nc'
    DDB_NC_FILE = f'{PREFIX}_DS3_DDB.nc'
    DDB_FILE = f'{PREFIX}_DS3_DDB'
    OUT_NC_FILE = f'{PREFIX}_OUT.nc'
    _RETRIEVE_TEMPORARY_FILES = (GSR_FILE, GAP_GSR_FILE, DENSE_GSR_FILE, DDB_NC_FILE, DDB_FILE, OUT_NC_FILE)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('response', valid_type=orm.Dict, required=False, validator=validate_response,
                   help='Switches {polarization, dielectric, phonons}; default P and ε∞.')
        spec.input('reference_polarization', valid_type=orm.ArrayData, required=False,
                   validator=validate_reference_polarization,
                   help='Array `polarization` (3,) e/Bohr^2 of the reference structure, to fix the branch of P.')
        spec.inputs['parameters'].help = ('ABINIT variables; dataset 1 ground state, 2 ddk, 3 response at Γ, '
                                          '4 bands at the gap k-points, 5 Berry phase on the denser mesh (settings.polarization_mesh_factor).')
        spec.output('output_parameters', valid_type=orm.Dict,
                    help='Scalars with `*_units` keys: energies, gap, volume, electrons, polarization.')
        spec.output('output_arrays', valid_type=orm.ArrayData,
                    help='polarization, dielectric_tensor, born_charges(_raw), force_constants_gamma, forces.')
        spec.default_output_node = 'output_parameters'

    @classmethod
    def validate_parameters_port(cls, value, ctx):
        message = super().validate_parameters_port(value, ctx)
        if message or value is None:
            return message
        names = {name.lower() for name in value.get_dict()}
        clashes = sorted(name for name in value.get_dict() if base_name(name.lower()) in RESPONSE_VARIABLES)
        if clashes:
            return (
                f'{clashes} are set by AbinitResponseCalculation from its `response` switches; '
                'remove them from `parameters`.'
            )
        for tol in TOLERANCE_NAMES:
            if tol in names:
                return (
                    f'give `{tol}` with a dataset number ({tol}1 ground state, {tol}2 ddk, {tol}3 response, '
                    f'{tol}4 gap bands, {tol}5 dense-mesh Berry phase): one tolerance cannot suit every dataset.'
                )
        if 'ecut' not in names:
            return '`parameters` must set `ecut` (Ha).'

    @classmethod
    def validate_settings_port(cls, value, ctx):
        message = super().validate_settings_port(value, ctx)
        if message or value is None:
            return message
        extra = value.get_dict().get('extra_bands', 2)
        if not isinstance(extra, int) or isinstance(extra, bool) or extra < 1:
            return f'`settings.extra_bands` must be a positive integer (it gives the gap), got {extra!r}.'
        factor = value.get_dict().get('polarization_mesh_factor', 1)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            return f'`settings.polarization_mesh_factor` must be a positive integer, got {factor!r}.'

    @classmethod
    def validate_inputs(cls, inputs, ctx=None):
        """Also: the run is an insulator with doubly occupied bands (an even number of electrons)."""
        message = super().validate_inputs(inputs, ctx)
        if message or 'structure' not in inputs:
            return message
        structure, pseudos = inputs['structure'], inputs.get('pseudos', {})
        try:
            nelect = sum(pseudo_valence(pseudos[site.kind_name]) for site in structure.sites)
        except AbinitInputError as exc:
            return str(exc)
        if abs(nelect - round(nelect)) > 1e-8 or round(nelect) % 2:
            return (
                f'the structure has {nelect:g} valence electrons: the response calculation needs an insulator '
                'with doubly occupied bands (an even number of electrons).'
            )

    def abinit_variables(self) -> dict:
        switches = response_switches(self.inputs.get('response'))
        parameters = {name.lower(): value for name, value in self.inputs.parameters.get_dict().items()}
        sites = self.inputs.structure.sites
        nelect = sum(pseudo_valence(self.inputs.pseudos[site.kind_name]) for site in sites)
        nocc = int(round(nelect)) // 2
        nband_gs = int(parameters.pop('nband', nocc + self.settings.get('extra_bands', 2)))
        if nband_gs <= nocc:
            raise AbinitInputError(f'`nband` = {nband_gs} leaves no empty band above the {nocc} occupied ones: no gap.')
        variables = {}
        variables.update(self.structure_variables())
        variables.update(self.kpoint_variables())
        variables.update(self.pseudo_variables())
        variables['iomode'] = 3  # netCDF outputs
        variables['occopt'] = 1  # insulator: response at Γ of doubly occupied bands
        factor = self.settings.get('polarization_mesh_factor', 1)
        dense = [factor * n for n in variables['ngkpt']] if factor > 1 else None
        variables.update(dataset_variables(switches, len(sites), nocc, nband_gs, parameters, dense))
        variables.update(parameters)
        return variables
