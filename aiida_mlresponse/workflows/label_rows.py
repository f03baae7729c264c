"""What differs between the dataset kinds of `LabelsWorkChain`: configurations -> structures, outputs -> rows.

One function per question, each with a branch per kind, so a new kind is added in one file.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from ase.data import atomic_numbers

from aiida_mlresponse.abinit.mg import mg_structure
from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays
from aiida_mlresponse.physics.strain import DeformationError, validate_deformation

#: mg_strain warm start: the fit R(D) is used once this many rows are labelled
WARM_START_MIN_ROWS = 10
#: mg_strain: the fields a relaxation writes (dataset columns of the same names)
FIELD_NAMES = ('rho', 'phi', 'u', 's')
#: the outputs of one labelling work chain that become a row
LABEL_OUTPUTS = {'response': ('output_arrays',), 'mg_strain': ('output_parameters', 'output_arrays', 'fields')}


def configuration_count(kind: str, configurations: orm.ArrayData) -> int:
    return len(configurations.get_array('positions' if kind == 'response' else 'deformations'))


def configuration_structures(kind: str, configurations: orm.ArrayData, reference=None, rows=None, check_only=False):
    """The (unstored) structures of the rows `rows` (default all); `check_only` validates without building."""
    if kind == 'response':
        cell, reference_positions, symbols, _ = structure_to_arrays(reference)
        positions = configurations.get_array('positions')
        cells = configurations.get_array('cells') if 'cells' in configurations.get_arraynames() else None
        if positions.ndim != 3 or positions.shape[1:] != reference_positions.shape:
            raise ValueError(f'`positions` must have shape (N, {len(symbols)}, 3) for the reference\'s {len(symbols)} atoms, '
                             f'got {positions.shape}.')
        if cells is not None and cells.shape != (len(positions), 3, 3):
            raise ValueError(f'`cells` must have shape ({len(positions)}, 3, 3), got {cells.shape}.')
        if check_only:
            return []
        rows = range(len(positions)) if rows is None else rows
        return [structure_from_arrays(cell if cells is None else cells[row], positions[row], symbols) for row in rows]
    deformations = configurations.get_array('deformations')
    if deformations.ndim != 2 or deformations.shape[1] != 6 or len(deformations) < 1:
        raise ValueError(f'`deformations` must have shape (N, 6), got {deformations.shape}.')
    try:
        validate_deformation(deformations)
    except DeformationError as exc:
        raise ValueError(str(exc)) from exc
    r_params = configurations.get_array('R') if 'R' in configurations.get_arraynames() else np.zeros((len(deformations), 3))
    if r_params.shape != (len(deformations), 3):
        raise ValueError(f'`R` must have shape ({len(deformations)}, 3), got {r_params.shape}.')
    if check_only:
        return []
    rows = range(len(deformations)) if rows is None else rows
    return [mg_structure(deformations[row], r_params[row]) for row in rows]


def has_label_outputs(kind: str, node) -> bool:
    return all(port in node.outputs for port in LABEL_OUTPUTS[kind])


def label_outputs(kind: str, node) -> dict:
    """port -> output node of one finished labelling work chain (response rows also need its input structure)."""
    outputs = {port: node.outputs[port] for port in LABEL_OUTPUTS[kind]}
    if kind == 'response':
        outputs['structure'] = node.inputs.abinit.structure
    return outputs


def dataset_rows(kind: str, grouped: dict) -> tuple[dict, dict]:
    """(schema columns, node attributes) from {index: {port: node}} in index order."""
    indices = sorted(grouped)
    calculations = [grouped[i]['output_arrays'].creator.uuid for i in indices]
    if kind == 'response':
        structures = [structure_to_arrays(grouped[i]['structure']) for i in indices]
        arrays = [grouped[i]['output_arrays'] for i in indices]
        rows = {'positions': np.array([s[1] for s in structures]), 'cells': np.array([s[0] for s in structures]),
                'polarization': np.array([a.get_array('polarization') for a in arrays]),
                'dielectric_tensor': np.array([a.get_array('dielectric_tensor') for a in arrays])}
        if all('born_charges' in a.get_arraynames() for a in arrays):
            rows['born_charges'] = np.array([a.get_array('born_charges') for a in arrays])
        symbols = structures[0][2]
        attributes = {'symbols': symbols, 'atomic_numbers': [int(atomic_numbers[s]) for s in symbols]}
    else:
        parameters = [grouped[i]['output_parameters'].get_dict() for i in indices]
        arrays = [grouped[i]['output_arrays'] for i in indices]
        rows = {name: np.array([p[name] for p in parameters])
                for name in ('free_energy', 'band_energy', 'entropy_energy', 'fermi_energy', 'volume')}
        rows.update({name: np.array([a.get_array(name) for a in arrays]) for name in ('stress', 'R', 'xred', 'cell')})
        rows['deformation'] = np.array([a.get_array('deformation') for a in arrays])
        rows.update({name: np.array([grouped[i]['fields'].get_array(name) for i in indices], dtype=np.float32)
                     for name in FIELD_NAMES})
        attributes = {'ngfft': list(rows['rho'].shape[1:])}
    rows['configuration_index'] = np.array(indices)
    # Row -> the CalcJob that produced it (the provenance graph has the same; this is for display).
    attributes['calculations'] = calculations
    return rows, attributes
