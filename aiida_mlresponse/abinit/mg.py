"""Strained hcp Mg (seed 002): the reference cell, its deformations, the fixed FFT grid, the seed's pseudo.

Checks shared by `calculations.relax.MgRelaxCalculation`, its protocol builder
(`workflows.restart.MgRelaxBaseWorkChain`) and the tests. Every configuration uses the same `ngfft`,
so the fields of all cells live on one reduced grid; `validate_grid` checks that it holds each cell.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from aiida import orm

from aiida_mlresponse.abinit.inputs import AbinitInputError
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

# The authors' pseudopotential (pspcod 5, not psp8) as an aiida-pseudo family of the generic type.
# The seed's pseudopotential is read where the project keeps it (../shared beside the checkout), never
# copied into the repository; MLRESPONSE_SEED_MG_PSEUDO points elsewhere.
SEED_MG_PSEUDO = pathlib.Path(os.environ.get(
    'MLRESPONSE_SEED_MG_PSEUDO', pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'ml_mg' / 'Mg.pseu'))
SEED_FAMILY_LABEL = 'mlresponse/seed002/LDA/Mg.pseu'

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
# the seed's pseudopotential
# ---------------------------------------------------------------------------------------------


def install_seed_family(path: pathlib.Path = SEED_MG_PSEUDO):
    """The authors' Mg.pseu (pspcod 5) as a family of aiida-pseudo's generic PseudoPotentialData.

    aiida-pseudo has no pspcod-5 type; the generic type stores the file and its element (read
    from the file name) and ABINIT reads the format from the file itself. Idempotent.
    """
    from aiida_pseudo.data.pseudo import PseudoPotentialData
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


__all__ = [
    'MG_ACELL_BOHR', 'SEED_FAMILY_LABEL', 'fft_friendly', 'install_seed_family', 'mg_structure', 'minimum_ngfft',
    'validate_grid', 'validate_mg_structure',
]
