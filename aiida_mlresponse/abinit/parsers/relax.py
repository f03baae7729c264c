"""`MgRelaxParser`: energies, stress, relaxed positions and the four fields on the fixed grid (netCDF only).

Outputs
    output_structure (StructureData): the last positions of the relaxation (HIST.nc); written also for a
        run killed at its walltime or cut short, so that a restart continues from them.
    output_parameters (Dict): free_energy, band_energy, entropy_energy (-TS), fermi_energy [Ha], volume
        [Bohr^3], R, symmetric_form_deviation, max_force [Ha/Bohr], relaxation_steps, scf_residual_res2,
        ngfft, checks (∫ρ, ∫u, ∫s/β against ABINIT's numbers), units.
    output_arrays (ArrayData): xred, R, stress (3x3, Ha/Bohr^3), cell (Bohr), deformation.
    fields (ArrayData): rho, phi, u, s (float32 on ngfft).
Files, walltime and ABINIT's error messages are handled by `parsers.base.AbinitParser`.
"""

from __future__ import annotations

import pathlib

import numpy as np
from aiida import orm

from aiida_mlresponse.abinit.calculations.relax import MgRelaxCalculation as Calc
from aiida_mlresponse.abinit.mg import (
    ELECTRON_CHECK_TOLERANCE, ENERGY_CHECK_TOLERANCE, SYMMETRIC_FORM_TOLERANCE,
)
from aiida_mlresponse.abinit.parsers.base import AbinitParser, unconverged_datasets
from aiida_mlresponse.data import structure_from_arrays
from aiida_mlresponse.physics.strain import cell_to_deformation, symmetric_form_parameters
from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

FILES = Calc.FILES


class MgRelaxParser(AbinitParser):
    """Parse HIST.nc (positions), GSR.nc (energies, stress), DEN/VCLMB/WFK.nc (fields) of MgRelaxCalculation."""

    def parse_partial(self, folder):
        self._last_positions()

    def _last_positions(self) -> int:
        """Output the last positions of HIST.nc; the number of steps it holds (0 if none or unreadable)."""
        import netCDF4

        if FILES['hist'] not in self.repository.list_object_names():
            return 0
        try:
            with self.repository.as_path(FILES['hist']) as path, netCDF4.Dataset(path) as hist:
                xred = np.asarray(hist['xred'][:], dtype=float)
                rprimd = np.asarray(hist['rprimd'][-1], dtype=float) if len(xred) else None
        except (OSError, KeyError, IndexError):  # a file cut short by the kill
            return 0
        if len(xred) == 0:
            return 0
        cell = rprimd * BOHR_TO_ANGSTROM
        self.out('output_structure', structure_from_arrays(cell, xred[-1] @ cell, ['Mg'] * len(xred[-1])))
        return len(xred)

    def parse_results(self, folder):
        import netCDF4

        from aiida_mlresponse.abinit import mg_fields

        names = self.repository.list_object_names()
        steps = self._last_positions()
        if not steps:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=f'{FILES["hist"]} (with a step)')
        missing = [FILES['gsr']] if FILES['gsr'] not in names else []
        missing += [FILES[key] for key in ('den', 'vclmb', 'wfk') if folder is None or not (folder / FILES[key]).is_file()]
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))

        parameters = self.inputs['parameters'].get_dict()
        with self.repository.as_path(FILES['gsr']) as path, netCDF4.Dataset(path) as gsr:
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
            with netCDF4.Dataset(folder / FILES['den']) as den:
                rho = mg_fields.grid_field(den['density'][:])
            with netCDF4.Dataset(folder / FILES['vclmb']) as vclmb:
                phi = mg_fields.grid_field(vclmb['vhartree_vloc'][:])
            for name, field in (('DEN', rho), ('VCLMB', phi)):
                if list(field.shape) != ngfft:
                    raise mg_fields.FieldError(f'{name} is on {list(field.shape)}, ngfft is {ngfft}.')
            with netCDF4.Dataset(folder / FILES['wfk']) as wfk:
                built = mg_fields.wavefunction_fields(wfk, ngfft, volume, tsmear)
        except mg_fields.FieldError as exc:
            return self.exit_codes.ERROR_GRID_MISMATCH.format(error=str(exc))

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
            'symmetric_form_deviation': deviation, 'max_force': max_force, 'relaxation_steps': steps,
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
        if 2 in unconverged_datasets(self.output_text):  # the SCF at the relaxed positions
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if deviation > SYMMETRIC_FORM_TOLERANCE:
            return self.exit_codes.ERROR_SYMMETRIC_FORM_BROKEN.format(deviation=deviation)
        return self._integral_checks(checks, nelect, band_energy, entropy_energy)

    def _integral_checks(self, checks, nelect, band_energy, entropy_energy):
        problems = []
        if abs(checks['electrons_integral'] - nelect) > ELECTRON_CHECK_TOLERANCE:
            problems.append(f'∫ρ = {checks["electrons_integral"]} != {nelect}')
        if abs(checks['band_energy_integral'] - band_energy) > ENERGY_CHECK_TOLERANCE:
            problems.append(f'∫u = {checks["band_energy_integral"]} != U = {band_energy}')
        if abs(checks['entropy_energy_integral'] - entropy_energy) > ENERGY_CHECK_TOLERANCE:
            problems.append(f'∫s/β = {checks["entropy_energy_integral"]} != -TS = {entropy_energy}')
        if problems:
            return self.exit_codes.ERROR_INTEGRAL_CHECK_FAILED.format(error='; '.join(problems))
        return None
