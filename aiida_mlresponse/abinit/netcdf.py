"""Readers of ABINIT's output files into plain numpy values (atomic units, as ABINIT writes them).

- GSR.nc: ground-state energy, eigenvalues, forces, stress, Berry phases.
- DDB.nc: the displacement-displacement and displacement-field second derivatives (reduced coordinates).
- DDB (text): ABINIT 9.6 does not put the field-field block (ε∞) in DDB.nc, so that one block is read
  from the text DDB, which is ABINIT's own machine-readable database (not the human-readable log).

Every reader raises `OutputFileError` with the file name on a missing or unreadable file.
"""

from __future__ import annotations

import re

import numpy as np


class OutputFileError(RuntimeError):
    """An ABINIT output file is missing, truncated or does not hold what it should."""


def _open(path_or_handle):
    import netCDF4

    try:
        if isinstance(path_or_handle, (bytes, bytearray)):
            return netCDF4.Dataset('inmemory.nc', memory=bytes(path_or_handle))
        return netCDF4.Dataset(str(path_or_handle))
    except (OSError, RuntimeError) as exc:
        raise OutputFileError(f'cannot read netCDF file {path_or_handle!s:.200}: {exc}') from exc


def _get(dataset, name, required=True):
    if name not in dataset.variables:
        if required:
            raise OutputFileError(f'variable `{name}` is missing from {dataset.filepath() if hasattr(dataset, "filepath") else "file"}')
        return None
    value = np.ma.filled(dataset.variables[name][:], np.nan)
    return np.array(value)


def read_gsr(source) -> dict:
    """Ground-state results of a GSR.nc file (path, or its bytes)."""
    with _open(source) as ds:
        result = {
            'cell': _get(ds, 'primitive_vectors'),  # rows: R_i in Bohr
            'reduced_positions': _get(ds, 'reduced_atom_positions'),
            'atom_species': _get(ds, 'atom_species').astype(int),  # 1-based
            'valence_charges': _get(ds, 'valence_charges'),
            'etotal': float(_get(ds, 'etotal')),
            'fermi_energy': float(_get(ds, 'fermie')),
            'number_of_electrons': float(_get(ds, 'nelect')),
            'occopt': int(_get(ds, 'occopt')),
            'eigenvalues': _get(ds, 'eigenvalues'),  # (nsppol, nkpt, nband) Ha
            'occupations': _get(ds, 'occupations'),
            'kpoint_weights': _get(ds, 'kpoint_weights'),
            'reduced_kpoints': _get(ds, 'reduced_coordinates_of_kpoints'),
            'forces': _get(ds, 'cartesian_forces'),  # (natom, 3) Ha/Bohr
            'stress': _get(ds, 'cartesian_stress_tensor'),  # Voigt, Ha/Bohr^3
            'reduced_electronic_polarization': _get(ds, 'reduced_electronic_polarization', required=False),
            'reduced_ionic_polarization': _get(ds, 'reduced_ionic_polarization', required=False),
        }
    for key in ('etotal', 'fermi_energy'):
        if not np.isfinite(result[key]):
            raise OutputFileError(f'`{key}` in the GSR file is not a finite number')
    return result


def band_edges(eigenvalues, occupations, threshold: float = 1e-6) -> tuple[float, float | None]:
    """(highest occupied, lowest unoccupied) eigenvalue in Ha; LUMO is None when no empty band was computed."""
    eig = np.asarray(eigenvalues, dtype=float)
    occ = np.asarray(occupations, dtype=float)
    occupied = occ > threshold
    homo = float(eig[occupied].max())
    empty = eig[~occupied]
    return homo, (float(empty.min()) if empty.size else None)


def read_ddb_netcdf(source) -> dict:
    """Reduced-coordinate second derivatives of a DDB.nc file.

    Returns `cell`, `displacement_displacement` (natom, 3, natom, 3) with its boolean `_mask`, and
    `displacement_field` (natom, 3 displacement, 3 field) with its mask, or None where absent.
    """
    with _open(source) as ds:
        result = {
            'cell': _get(ds, 'primitive_vectors'),
            'atom_species': _get(ds, 'atom_species').astype(int),
            'valence_charges': _get(ds, 'valence_charges'),
            'qpoint': _get(ds, 'q_point_reduced_coord'),
            'atomic_masses_amu': _get(ds, 'atomic_masses_amu', required=False),  # per species
        }
        d2 = _get(ds, 'second_derivative_of_energy', required=False)
        mask = _get(ds, 'second_derivative_of_energy_mask', required=False)
        born = _get(ds, 'born_effective_charge_tensor', required=False)  # (field, atom, displacement)
        born_mask = _get(ds, 'born_effective_charge_tensor_mask', required=False)
    # netCDF lists the dimensions of ABINIT's Fortran array d2(cplex, idir1, ipert1, idir2, ipert2) in
    # reverse, so the C-order array is [ipert2, idir2, ipert1, idir1]: transpose back to (j1, j2) order.
    result['displacement_displacement'] = None if d2 is None else np.transpose(d2[..., 0], (2, 3, 0, 1))
    result['displacement_displacement_mask'] = None if mask is None else np.transpose(mask, (2, 3, 0, 1)).astype(bool)
    result['displacement_field'] = None if born is None else np.transpose(born, (1, 2, 0))
    result['displacement_field_mask'] = None if born_mask is None else np.transpose(born_mask, (1, 2, 0)).astype(bool)
    return result


_ELEMENT_RE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s*$')


def read_ddb_text_elements(text: str) -> dict[tuple[int, int, int, int], complex]:
    """Every 2nd-derivative element of a text DDB: (idir1, ipert1, idir2, ipert2) -> value (1-based, as ABINIT)."""
    elements = {}
    in_block = False
    for line in text.splitlines():
        if '2nd derivatives' in line:
            in_block = True
            continue
        if not in_block:
            continue
        match = _ELEMENT_RE.match(line)
        if match:
            real, imag = (float(x.replace('D', 'E').replace('d', 'e')) for x in match.groups()[4:])
            elements[tuple(int(x) for x in match.groups()[:4])] = complex(real, imag)
    if not elements:
        raise OutputFileError('the DDB holds no second-derivative elements')
    return elements


def field_field_block(elements: dict, natom: int) -> np.ndarray | None:
    """The (3, 3) d²E/dE_red dE_red block (perturbation natom+2), or None when it is incomplete."""
    pert = natom + 2
    try:
        return np.array([[elements[(i, pert, j, pert)].real for j in (1, 2, 3)] for i in (1, 2, 3)])
    except KeyError:
        return None
