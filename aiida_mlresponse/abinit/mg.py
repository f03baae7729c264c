"""Relaxation of strained hcp Mg at fixed cell (seed 002), its parser and its protocols.

One ABINIT run, two datasets: 1 relaxes the internal coordinates (ionmov 2, BFGS) at fixed cell;
2 is one SCF at the relaxed positions (getxred -1, getwfk -1) that writes DEN.nc, VCLMB.nc and
WFK.nc without the TIMn prefix a relaxation gives its files. Every configuration uses the same
`ngfft`, so the fields of all cells live on one reduced grid.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob
from aiida.parsers import Parser
from aiida_pseudo.data.pseudo import PseudoPotentialData

from aiida_mlresponse.abinit.inputs import (
    RESERVED_VARIABLES,
    AbinitInputError,
    structure_variables,
    validate_cell_and_positions,
    validate_parameters,
    write_input,
)
from aiida_mlresponse.physics.crystals import MG_ACELL_BOHR
from aiida_mlresponse.physics.strain import (
    DeformationError,
    cell_to_deformation,
    deformation_to_cell,
    symmetric_form_parameters,
    symmetric_form_positions,
    validate_deformation,
)
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM

PREFIX = 'aiida'
INPUT_FILE = f'{PREFIX}.abi'
OUTPUT_FILE = f'{PREFIX}.abo'
LOG_FILE = 'aiida.log'
PSEUDO_FOLDER = 'pseudos'
FILES = {
    'hist': f'{PREFIX}o_DS1_HIST.nc',
    'gsr': f'{PREFIX}o_DS2_GSR.nc',
    'den': f'{PREFIX}o_DS2_DEN.nc',
    'vclmb': f'{PREFIX}o_DS2_VCLMB.nc',
    'wfk': f'{PREFIX}o_DS2_WFK.nc',
}
PROTOCOL_FILE = pathlib.Path(__file__).parent / 'protocols' / 'mg.yaml'

# The authors' pseudopotential (pspcod 5, not psp8) as an aiida-pseudo family of the generic type.
# The seed's pseudopotential is read where the project keeps it (../shared beside the checkout), never
# copied into the repository; MLRESPONSE_SEED_MG_PSEUDO points elsewhere.
SEED_MG_PSEUDO = pathlib.Path(os.environ.get(
    'MLRESPONSE_SEED_MG_PSEUDO', pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'ml_mg' / 'Mg.pseu'))
SEED_FAMILY_LABEL = 'mlresponse/seed002/LDA/Mg.pseu'

# Variables this CalcJob writes itself (dataset layout, relaxation mode, outputs, smearing kind).
MG_RESERVED = RESERVED_VARIABLES | frozenset(
    {
        'ionmov', 'optcell', 'getwfk', 'getxred', 'getden', 'irdwfk', 'prtden', 'prtvha', 'prtvclmb',
        'prtwf', 'iomode', 'occopt', 'kptopt', 'istwfk', 'chkprim', 'chksymbreak',
    }
)
# Only these may be set per dataset (suffix 1 or 2) by a protocol or a user.
REQUIRED = ('ecut', 'ngfft', 'nband', 'tsmear', 'ixc')
SYMMETRIC_FORM_TOLERANCE = 1e-6  # relaxed positions keep the symmetric form (reduced coordinates)
INPUT_SYMMETRIC_FORM_TOLERANCE = 1e-4  # an input structure must already be in it: this is the Mg reference check
ENERGY_CHECK_TOLERANCE = 1e-6  # Ha: ∫u = U, ∫s/β = -TS
ELECTRON_CHECK_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------
# checks shared by the CalcJob, the protocol builder and the tests
# ---------------------------------------------------------------------------------------------


def fft_friendly(n: int) -> bool:
    """Even and a product of 2, 3 and 5 only (sizes ABINIT's FFTs handle and its grids use)."""
    if n < 2 or n % 2:
        return False
    for factor in (2, 3, 5):
        while n % factor == 0:
            n //= factor
    return n == 1


def minimum_ngfft(cell_bohr, ecut: float) -> np.ndarray:
    """Smallest grid holding the density of a cutoff `ecut` (ABINIT's boxcut >= 2).

    The FFT box reaches |G·a_i|/2π = n_i/2 in direction i; the density needs all G up to
    2·sqrt(2·ecut), so n_i >= 2·sqrt(2·ecut)·|a_i|/π.
    """
    lengths = np.linalg.norm(np.asarray(cell_bohr, dtype=float), axis=1)
    return 2.0 * np.sqrt(2.0 * ecut) * lengths / np.pi


def validate_grid(ngfft, ecut: float, cell_bohr) -> None:
    """Raise `AbinitInputError` for a grid ABINIT cannot use or one too small for the cutoff."""
    ngfft = list(ngfft)
    if len(ngfft) != 3 or not all(isinstance(n, (int, np.integer)) for n in ngfft):
        raise AbinitInputError(f'`ngfft` must be three integers, got {ngfft!r}.')
    bad = [int(n) for n in ngfft if not fft_friendly(int(n))]
    if bad:
        raise AbinitInputError(f'`ngfft` {ngfft}: {bad} not FFT-friendly (use even products of 2, 3 and 5).')
    needed = minimum_ngfft(cell_bohr, ecut)
    if np.any(np.array(ngfft) < needed):
        raise AbinitInputError(
            f'`ngfft` {ngfft} is too small for ecut {ecut} Ha in this cell: it needs at least '
            f'{np.ceil(needed).astype(int).tolist()} (boxcut 2).'
        )


def validate_mg_structure(cell_angstrom, positions_angstrom, symbols) -> np.ndarray:
    """D of a structure that is the 4-atom Mg reference cell (deformed, positions in the symmetric form)."""
    if list(symbols) != ['Mg'] * 4:
        raise AbinitInputError(f'the Mg protocol needs the 4-atom Mg reference cell, got atoms {list(symbols)}.')
    cell_bohr = np.asarray(cell_angstrom, dtype=float) * ANGSTROM_TO_BOHR
    xred = np.linalg.solve(cell_bohr.T, (np.asarray(positions_angstrom, dtype=float) * ANGSTROM_TO_BOHR).T).T
    _, deviation = symmetric_form_parameters(xred)
    if deviation > INPUT_SYMMETRIC_FORM_TOLERANCE:
        raise AbinitInputError(
            'the structure is not the Mg reference cell: its positions are not of the symmetric form '
            f'(R1,R2,R3), (½+R1,½+R2,R3), (-R1,⅔-R2,½-R3), (½-R1,⅙-R2,½-R3) (deviation {deviation:.2g}).'
        )
    if np.linalg.det(cell_bohr) <= 0:
        raise AbinitInputError('the Mg cell must be right-handed (positive volume).')
    deformation = cell_to_deformation(cell_bohr)
    try:
        validate_deformation(deformation)
    except DeformationError as exc:
        raise AbinitInputError(str(exc)) from exc
    return deformation


def mg_structure(deformation, r_params=(0.0, 0.0, 0.0)) -> orm.StructureData:
    """StructureData of D applied to the reference cell, atoms in the symmetric form with R."""
    try:
        deformation = validate_deformation(deformation)
    except DeformationError as exc:
        raise AbinitInputError(str(exc)) from exc
    cell = deformation_to_cell(deformation) * BOHR_TO_ANGSTROM
    positions = symmetric_form_positions(np.asarray(r_params, dtype=float)) @ cell
    structure = orm.StructureData(cell=cell.tolist())
    for position in positions:
        structure.append_atom(position=position.tolist(), symbols='Mg')
    return structure


# ---------------------------------------------------------------------------------------------
# the CalcJob
# ---------------------------------------------------------------------------------------------


def _structure_arrays(structure):
    cell = np.array(structure.cell, dtype=float)
    positions = np.array([site.position for site in structure.sites], dtype=float)
    symbols = [structure.get_kind(site.kind_name).symbol for site in structure.sites]
    return cell, positions, symbols


def validate_calculation_inputs(inputs, _=None):
    """Everything that would make ABINIT fail or the labels meaningless, before submission."""
    if any(name not in inputs for name in ('structure', 'parameters', 'kpoints')):
        return None  # the missing port reports itself
    try:
        structure, parameters = inputs['structure'], inputs['parameters'].get_dict()
        cell, positions, symbols = _structure_arrays(structure)
        validate_cell_and_positions(cell, positions, structure.pbc)
        validate_mg_structure(cell, positions, symbols)
        validate_parameters(parameters, reserved=MG_RESERVED)
        missing = [name for name in REQUIRED if name not in parameters]
        if missing:
            raise AbinitInputError(f'`parameters` must set {missing}.')
        validate_grid(parameters['ngfft'], float(parameters['ecut']), cell * ANGSTROM_TO_BOHR)
        if float(parameters['tsmear']) <= 0:
            raise AbinitInputError('`tsmear` must be positive (cold smearing, occopt 4).')
        mesh, offset = inputs['kpoints'].get_kpoints_mesh()
        if any(int(n) < 1 for n in mesh) or any(abs(o) > 1e-12 for o in offset):
            raise AbinitInputError(f'the k-point mesh must be Γ-centred with positive divisions, got {mesh}, {offset}.')
        missing_pseudos = sorted(set(structure.get_kind_names()) - set(inputs.get('pseudos', {})))
        if missing_pseudos:
            raise AbinitInputError(f'no pseudopotential for kind(s) {missing_pseudos}.')
    except AbinitInputError as exc:
        return str(exc)
    except AttributeError:
        return 'the k-points must be given as a mesh (KpointsData.set_kpoints_mesh).'


class MgRelaxCalculation(CalcJob):
    """ABINIT: relax the internal coordinates of a strained Mg cell, then write the fields."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='The deformed 4-atom Mg reference cell.')
        spec.input('kpoints', valid_type=orm.KpointsData, help='Γ-centred Monkhorst-Pack mesh.')
        spec.input('parameters', valid_type=orm.Dict, help='ABINIT variables: ecut, ngfft, nband, tsmear, ixc, tolerances.')
        spec.input_namespace('pseudos', valid_type=PseudoPotentialData, dynamic=True, help='Pseudo per kind name.')
        spec.inputs.validator = validate_calculation_inputs
        spec.inputs['metadata']['options']['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        spec.inputs['metadata']['options']['withmpi'].default = False
        spec.inputs['metadata']['options']['parser_name'].default = 'mlresponse.abinit.mg_relax'
        spec.inputs['metadata']['options']['input_filename'].default = INPUT_FILE
        spec.inputs['metadata']['options']['output_filename'].default = OUTPUT_FILE

        spec.output('output_parameters', valid_type=orm.Dict, help='F, U, -TS, E_F, R, checks (Ha, Bohr).')
        spec.output('output_structure', valid_type=orm.StructureData, help='Relaxed (last) positions.')
        spec.output('output_arrays', valid_type=orm.ArrayData, help='xred, R, stress (Ha/Bohr³), cell (Bohr), D.')
        spec.output('fields', valid_type=orm.ArrayData, required=False, help='rho, phi, u, s (float32, n1×n2×n3).')
        spec.default_output_node = 'output_parameters'

        spec.exit_code(300, 'ERROR_MISSING_OUTPUT_FILES', message='ABINIT did not write {files}.')
        spec.exit_code(310, 'ERROR_ABINIT_ERROR', message='ABINIT stopped with an error: {message}')
        spec.exit_code(400, 'ERROR_OUT_OF_WALLTIME', message='The calculation ran out of walltime.')
        spec.exit_code(410, 'ERROR_SCF_NOT_CONVERGED', message='The SCF cycle of the final dataset did not converge.')
        spec.exit_code(420, 'ERROR_RELAXATION_NOT_CONVERGED', message='The relaxation stopped with max force {force:.3g} > tolmxf {tolmxf:.3g} Ha/Bohr.')
        spec.exit_code(430, 'ERROR_GRID_MISMATCH', message='A field is not on the requested grid: {message}')
        spec.exit_code(440, 'ERROR_SYMMETRIC_FORM_BROKEN', message='The relaxed positions left the symmetric form by {deviation:.3g}.')
        spec.exit_code(450, 'ERROR_INTEGRAL_CHECK_FAILED', message='A field integral check failed: {message}')

    def prepare_for_submission(self, folder):
        parameters = self.inputs.parameters.get_dict()
        cell, positions, symbols = _structure_arrays(self.inputs.structure)
        kind_names = [site.kind_name for site in self.inputs.structure.sites]
        kind_order = sorted(set(kind_names))
        znucl = [12] * len(kind_order)
        mesh, _ = self.inputs.kpoints.get_kpoints_mesh()

        folder.get_subfolder(PSEUDO_FOLDER, create=True)
        pseudo_files = []
        for kind in kind_order:
            pseudo = self.inputs.pseudos[kind]
            name = f'{kind}{pathlib.Path(pseudo.filename).suffix or ".psp"}'
            with pseudo.open(mode='rb') as handle:
                folder.create_file_from_filelike(handle, f'{PSEUDO_FOLDER}/{name}', mode='wb')
            pseudo_files.append(name)

        variables = {'ndtset': 2}
        variables.update(structure_variables(cell, positions, kind_names, kind_order, znucl))
        variables.update({
            'ngkpt': [int(n) for n in mesh], 'nshiftk': 1, 'shiftk': [0.0, 0.0, 0.0], 'kptopt': 1,
            'occopt': 4, 'chksymbreak': 0, 'iomode': 3,
            # dataset 1: BFGS at fixed cell; writes only what dataset 2 starts from
            'ionmov1': 2, 'optcell1': 0, 'prtden1': 0, 'prtwf1': 1,
            # dataset 2: one SCF at the relaxed positions, clean field files, full plane-wave sets
            'ionmov2': 0, 'getxred2': -1, 'getwfk2': -1, 'istwfk2': '*1',
            'prtden2': 1, 'prtvha2': 1, 'prtvclmb2': 1, 'prtwf2': 1,
        })
        variables.update(parameters)
        variables['pp_dirpath'] = PSEUDO_FOLDER
        variables['pseudos'] = ', '.join(pseudo_files)
        folder.create_file_from_filelike(_text(write_input(variables)), INPUT_FILE, mode='w')

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [INPUT_FILE]
        codeinfo.stdout_name = LOG_FILE
        calcinfo = datastructures.CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [OUTPUT_FILE, LOG_FILE, FILES['hist'], FILES['gsr']]
        # Large files go to a temporary folder: the parser keeps float32 fields, not the raw files.
        calcinfo.retrieve_temporary_list = [FILES['den'], FILES['vclmb'], FILES['wfk']]
        return calcinfo


def _text(text):
    import io

    return io.StringIO(text)


# ---------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------


class MgRelaxParser(Parser):
    """Energies, stress, relaxed positions and the four fields on the fixed grid (netCDF only)."""

    def parse(self, **kwargs):
        import netCDF4

        from aiida_mlresponse.abinit import mg_fields

        retrieved = self.retrieved
        names = retrieved.base.repository.list_object_names()
        text = ''
        for name in (OUTPUT_FILE, LOG_FILE):
            if name in names:
                text += retrieved.base.repository.get_object_content(name)
        error = _abinit_error(text)
        if error:
            return self.exit_codes.ERROR_ABINIT_ERROR.format(message=error)
        parameters = self.node.inputs.parameters.get_dict()

        if FILES['hist'] not in names:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=FILES['hist'])
        with retrieved.base.repository.as_path(FILES['hist']) as path, netCDF4.Dataset(path) as hist:
            xred_steps = np.asarray(hist['xred'][:], dtype=float)
            fcart_steps = np.asarray(hist['fcart'][:], dtype=float)
            rprimd = np.asarray(hist['rprimd'][-1], dtype=float)
        if len(xred_steps) == 0:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=f'{FILES["hist"]} (no step)')
        # The last positions are worth keeping even from an unfinished run: a restart starts there.
        structure = orm.StructureData(cell=(rprimd * BOHR_TO_ANGSTROM).tolist())
        for x in xred_steps[-1]:
            structure.append_atom(position=(x @ rprimd * BOHR_TO_ANGSTROM).tolist(), symbols='Mg')
        self.out('output_structure', structure)

        temporary = kwargs.get('retrieved_temporary_folder')
        missing = [FILES[key] for key in ('gsr',) if FILES[key] not in names]
        missing += [FILES[key] for key in ('den', 'vclmb', 'wfk') if not temporary or not (pathlib.Path(temporary) / FILES[key]).is_file()]
        if missing:
            if 'walltime' in text.lower() or self.node.exit_status == 400:
                return self.exit_codes.ERROR_OUT_OF_WALLTIME
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))

        with retrieved.base.repository.as_path(FILES['gsr']) as path, netCDF4.Dataset(path) as gsr:
            free_energy = float(gsr['etotal'][:])
            band_energy = float(gsr['e_eigenvalues'][:])
            entropy_energy = float(gsr['e_entropy'][:])
            fermi = float(gsr['fermi_energy'][:])
            nelect = float(gsr['nelect'][:])
            voigt = np.asarray(gsr['cartesian_stress_tensor'][:], dtype=float)
            xred = np.asarray(gsr['reduced_atom_positions'][:], dtype=float)
            cell = np.asarray(gsr['primitive_vectors'][:], dtype=float)
            forces = np.asarray(gsr['cartesian_forces'][:], dtype=float)
            residual = float(gsr['res2'][:])
        stress = np.array([[voigt[0], voigt[5], voigt[4]], [voigt[5], voigt[1], voigt[3]], [voigt[4], voigt[3], voigt[2]]])
        volume = abs(np.linalg.det(cell))
        r_params, deviation = symmetric_form_parameters(xred)
        max_force = float(np.abs(forces).max())

        ngfft = [int(n) for n in parameters['ngfft']]
        tsmear = float(parameters['tsmear'])
        try:
            with netCDF4.Dataset(pathlib.Path(temporary) / FILES['den']) as den:
                rho = mg_fields.grid_field(den['density'][:])
            with netCDF4.Dataset(pathlib.Path(temporary) / FILES['vclmb']) as vclmb:
                phi = mg_fields.grid_field(vclmb['vhartree_vloc'][:])
            for name, field in (('DEN', rho), ('VCLMB', phi)):
                if list(field.shape) != ngfft:
                    raise mg_fields.FieldError(f'{name} is on {list(field.shape)}, ngfft is {ngfft}.')
            with netCDF4.Dataset(pathlib.Path(temporary) / FILES['wfk']) as wfk:
                built = mg_fields.wavefunction_fields(wfk, ngfft, volume, tsmear)
        except mg_fields.FieldError as exc:
            return self.exit_codes.ERROR_GRID_MISMATCH.format(message=str(exc))

        checks = {
            'electrons_integral': mg_fields.integrate(rho, volume),
            'electrons_expected': nelect,
            'band_energy_integral': mg_fields.integrate(built['u'], volume),
            'entropy_energy_integral': mg_fields.integrate(built['s'], volume) * tsmear,
            'density_from_wavefunctions_max_difference': float(np.abs(built['rho'] - rho).max()),
        }
        results = {
            'free_energy': free_energy, 'band_energy': band_energy, 'entropy_energy': entropy_energy,
            'fermi_energy': fermi, 'volume': volume, 'R': r_params.tolist(),
            'symmetric_form_deviation': deviation, 'max_force': max_force, 'relaxation_steps': len(xred_steps),
            'scf_residual_res2': residual, 'ngfft': ngfft, 'checks': checks,
            'units': {'energies': 'Ha', 'volume': 'Bohr^3', 'max_force': 'Ha/Bohr', 'R': 'reduced'},
        }
        self.out('output_parameters', orm.Dict(results))

        arrays = orm.ArrayData()
        arrays.set_array('xred', xred)
        arrays.set_array('R', r_params)
        arrays.set_array('stress', stress)
        arrays.set_array('cell', cell)
        arrays.set_array('deformation', cell_to_deformation(cell))
        arrays.base.attributes.set('units', {'xred': 'reduced', 'R': 'reduced', 'stress': 'Ha/Bohr^3', 'cell': 'Bohr', 'deformation': '1,1,1,deg,deg,deg'})
        self.out('output_arrays', arrays)

        fields = orm.ArrayData()
        for name, field in (('rho', rho), ('phi', phi), ('u', built['u']), ('s', built['s'])):
            fields.set_array(name, field.astype(np.float32))
        fields.base.attributes.set('units', {'rho': 'e/Bohr^3', 'phi': 'Ha', 'u': 'Ha/Bohr^3', 's': '1/Bohr^3'})
        fields.base.attributes.set('ngfft', ngfft)
        fields.base.attributes.set('layout', 'field[i, j, k] at reduced coordinates (i/n1, j/n2, k/n3)')
        self.out('fields', fields)

        tolmxf = float(parameters.get('tolmxf', parameters.get('tolmxf1', 5e-5)))
        if max_force > tolmxf * 1.0001:
            return self.exit_codes.ERROR_RELAXATION_NOT_CONVERGED.format(force=max_force, tolmxf=tolmxf)
        if 'ScfConvergenceWarning' in _dataset_text(text, 2):
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if deviation > SYMMETRIC_FORM_TOLERANCE:
            return self.exit_codes.ERROR_SYMMETRIC_FORM_BROKEN.format(deviation=deviation)
        problems = []
        if abs(checks['electrons_integral'] - nelect) > ELECTRON_CHECK_TOLERANCE:
            problems.append(f'∫ρ = {checks["electrons_integral"]} != {nelect}')
        if abs(checks['band_energy_integral'] - band_energy) > ENERGY_CHECK_TOLERANCE:
            problems.append(f'∫u = {checks["band_energy_integral"]} != U = {band_energy}')
        if abs(checks['entropy_energy_integral'] - entropy_energy) > ENERGY_CHECK_TOLERANCE:
            problems.append(f'∫s/β = {checks["entropy_energy_integral"]} != -TS = {entropy_energy}')
        if problems:
            return self.exit_codes.ERROR_INTEGRAL_CHECK_FAILED.format(message='; '.join(problems))
        return None


def _abinit_error(text: str) -> str | None:
    """The message of ABINIT's first `--- !ERROR` block, if any (text is used only to detect errors)."""
    start = text.find('--- !ERROR')
    if start < 0:
        return None
    block = text[start:start + 2000]
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('message:'):
            return ' '.join(item.strip() for item in lines[i + 1:i + 4] if item.strip() and item.strip() != '...')
    return block.splitlines()[0]


def _dataset_text(text: str, dataset: int) -> str:
    marker = f'== DATASET  {dataset} '
    start = text.find(marker)
    return text[start:] if start >= 0 else ''


# ---------------------------------------------------------------------------------------------
# protocols and pseudos
# ---------------------------------------------------------------------------------------------


def install_seed_family(path: pathlib.Path = SEED_MG_PSEUDO):
    """The authors' Mg.pseu (pspcod 5) as a family of aiida-pseudo's generic PseudoPotentialData.

    aiida-pseudo has no pspcod-5 type; the generic type stores the file and its element (read
    from the file name) and ABINIT reads the format from the file itself. Idempotent.
    """
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    existing = orm.QueryBuilder().append(PseudoPotentialFamily, filters={'label': SEED_FAMILY_LABEL}).first()
    if existing:
        return existing[0], False
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: the `precise` Mg protocol needs the seed\'s Mg.pseu.')
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(path, pathlib.Path(tmp) / 'Mg.pseu')
        family = PseudoPotentialFamily.create_from_folder(pathlib.Path(tmp), SEED_FAMILY_LABEL, pseudo_type=PseudoPotentialData)
    family.description = f'seed 002 (ys-teh/ML_Mg) LDA Troullier-Martins Mg, pspcod 5, from {path}'
    return family, True


def load_protocol(protocol: str | None = None, overrides: dict | None = None) -> dict:
    """One resolved entry of protocols/mg.yaml, with `overrides` deep-merged on top."""
    from aiida_mlresponse.abinit.protocols import load_protocols, recursive_merge

    data = load_protocols(PROTOCOL_FILE)
    name = protocol or data['default_protocol']
    if name not in data['protocols']:
        raise ValueError(f'unknown Mg protocol `{name}`; choose one of {sorted(data["protocols"])}.')
    return recursive_merge(data['protocols'][name], overrides or {})


def calculation_inputs_from_protocol(code, structure=None, deformation=None, protocol=None, overrides=None) -> dict:
    """Inputs of MgRelaxCalculation for a deformation D (or a structure that is the Mg reference)."""
    from aiida_mlresponse.abinit.pseudos import get_family

    if (structure is None) == (deformation is None):
        raise ValueError('give either a `structure` or a `deformation`.')
    if structure is None:
        structure = mg_structure(deformation)
    cell, positions, symbols = _structure_arrays(structure)
    validate_mg_structure(cell, positions, symbols)
    entry = load_protocol(protocol, overrides)
    parameters = dict(entry['parameters'])
    validate_parameters(parameters, reserved=MG_RESERVED)
    validate_grid(parameters['ngfft'], float(parameters['ecut']), cell * ANGSTROM_TO_BOHR)
    family = get_family(entry['pseudo_family'])
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh(entry['kpoints']['mesh'], [0.0, 0.0, 0.0])
    return {
        'code': code,
        'structure': structure,
        'kpoints': kpoints,
        'parameters': orm.Dict(parameters),
        'pseudos': family.get_pseudos(structure=structure),
        'metadata': {'options': dict(entry.get('options', {}))},
    }


__all__ = [
    'MgRelaxCalculation', 'MgRelaxParser', 'calculation_inputs_from_protocol', 'install_seed_family',
    'load_protocol', 'mg_structure', 'validate_grid', 'validate_mg_structure', 'MG_ACELL_BOHR',
]
