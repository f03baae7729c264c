"""`MgRelaxCalculation`: relaxation of strained hcp Mg at fixed cell (seed 002), then its fields.

One ABINIT run, two datasets: 1 relaxes the internal coordinates (ionmov 2, BFGS) at fixed cell;
2 is one SCF at the relaxed positions (getxred -1, getwfk -1) that writes DEN.nc, VCLMB.nc and
WFK.nc without the TIMn prefix a relaxation gives its files. Every configuration uses the same
`ngfft`, so the fields of all cells live on one reduced grid.

Ports, files, walltime and exit codes shared with every ABINIT CalcJob: `calculations.base`.
Outputs: see `parsers.relax.MgRelaxParser`.
"""

from __future__ import annotations

from aiida import orm

from aiida_mlresponse.abinit.calculations.base import PREFIX, AbinitCalculation
from aiida_mlresponse.abinit.inputs import RESERVED_VARIABLES, AbinitInputError
from aiida_mlresponse.abinit.mg import validate_grid, validate_mg_structure
from aiida_mlresponse.data import structure_to_arrays
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

# Variables this CalcJob writes itself (dataset layout, relaxation mode, outputs, smearing kind).
MG_RESERVED = RESERVED_VARIABLES | frozenset(
    {
        'ionmov', 'optcell', 'getwfk', 'getxred', 'getden', 'irdwfk', 'prtden', 'prtvha', 'prtvclmb',
        'prtwf', 'iomode', 'occopt', 'kptopt', 'istwfk', 'chkprim', 'chksymbreak',
    }
)
REQUIRED = ('ecut', 'ngfft', 'nband', 'tsmear', 'ixc')


def check_relax_inputs(structure, parameters: dict) -> None:
    """Raise `AbinitInputError` for a structure that is not the Mg reference cell, or a grid or smearing
    ABINIT cannot use (also called by the protocol builder, before anything is submitted)."""
    cell, positions, symbols, _ = structure_to_arrays(structure)
    validate_mg_structure(cell, positions, symbols)
    missing = [name for name in REQUIRED if name not in parameters]
    if missing:
        raise AbinitInputError(f'`parameters` must set {missing}.')
    validate_grid(parameters['ngfft'], float(parameters['ecut']), cell * ANGSTROM_TO_BOHR)
    if float(parameters['tsmear']) <= 0:
        raise AbinitInputError('`tsmear` must be positive (cold smearing, occopt 4).')


class MgRelaxCalculation(AbinitCalculation):
    """ABINIT: relax the internal coordinates of a strained Mg cell, then write the fields."""

    _PARSER_NAME = 'mlresponse.abinit.mg_relax'
    _PSEUDO_DIR = 'pseudos'  # as in every Mg input file written so far (the campaign's included)
    _RESERVED = MG_RESERVED
    FILES = {
        'hist': f'{PREFIX}_DS1_HIST.nc',
        'gsr': f'{PREFIX}_DS2_GSR.nc',
        'den': f'{PREFIX}_DS2_DEN.nc',
        'vclmb': f'{PREFIX}_DS2_VCLMB.nc',
        'wfk': f'{PREFIX}_DS2_WFK.nc',
    }
    _RETRIEVE_FILES = (FILES['hist'], FILES['gsr'])
    # Large files go to a temporary folder: the parser keeps float32 fields, not the raw files.
    _RETRIEVE_TEMPORARY_FILES = (FILES['den'], FILES['vclmb'], FILES['wfk'])

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs['structure'].help = 'The deformed 4-atom Mg reference cell.'
        spec.inputs['kpoints'].help = 'Γ-centred Monkhorst-Pack mesh.'
        spec.inputs['parameters'].help = 'ABINIT variables: ecut, ngfft, nband, tsmear, ixc, tolerances.'
        spec.output('output_parameters', valid_type=orm.Dict, help='F, U, -TS, E_F, R, checks (Ha, Bohr).')
        spec.output('output_structure', valid_type=orm.StructureData, required=False,
                    help='Relaxed (last) positions; also after a walltime kill, for the restart.')
        spec.output('output_arrays', valid_type=orm.ArrayData, help='xred, R, stress (Ha/Bohr³), cell (Bohr), D.')
        spec.output('fields', valid_type=orm.ArrayData, required=False, help='rho, phi, u, s (float32, n1×n2×n3).')
        spec.default_output_node = 'output_parameters'

    @classmethod
    def check_inputs(cls, structure, parameters: dict) -> None:
        super().check_inputs(structure, parameters)
        check_relax_inputs(structure, parameters)

    @classmethod
    def validate_inputs(cls, inputs, ctx=None):
        """Everything that would make ABINIT fail or the labels meaningless, before submission."""
        message = super().validate_inputs(inputs, ctx)
        if message or any(name not in inputs for name in ('structure', 'parameters', 'kpoints')):
            return message  # a missing port reports itself
        try:
            check_relax_inputs(inputs['structure'], inputs['parameters'].get_dict())
            mesh, offset = inputs['kpoints'].get_kpoints_mesh()
            if any(abs(o) > 1e-12 for o in offset):
                raise AbinitInputError(f'the k-point mesh must be Γ-centred, got offset {list(offset)}.')
        except AbinitInputError as exc:
            return str(exc)

    def abinit_variables(self) -> dict:
        variables = {'ndtset': 2}
        variables.update(self.structure_variables())
        variables.update(self.kpoint_variables())
        variables.update({
            'kptopt': 1, 'occopt': 4, 'chksymbreak': 0, 'iomode': 3,
            # dataset 1: BFGS at fixed cell; writes only what dataset 2 starts from
            'ionmov1': 2, 'optcell1': 0, 'prtden1': 0, 'prtwf1': 1,
            # dataset 2: one SCF at the relaxed positions, clean field files, full plane-wave sets
            'ionmov2': 0, 'getxred2': -1, 'getwfk2': -1, 'istwfk2': '*1',
            'prtden2': 1, 'prtvha2': 1, 'prtvclmb2': 1, 'prtwf2': 1,
        })
        variables.update(self.inputs.parameters.get_dict())
        variables.update(self.pseudo_variables())
        return variables
