"""The calcfunctions of `RamanWorkChain`: every number of a Raman result is a node with the DFT runs behind it.

- `equilibrium_structure`: the structure at the requested lattice, and a record of that lattice;
- `finite_difference_configurations`: the symmetry-reduced ±h displaced structures of the DFT reference;
- `ml_raman`: ε∞, Z*, ∂χ/∂τ of every committee member (autograd), with the DFT force constants of the equilibrium
  run: LO-TO, Raman tensors, spectra and the TO/LO peaks, as the committee mean and its band (members' std);
- `dft_raman`: the same from ABINIT alone (DFPT ε∞ and Z*, ∂χ/∂τ by central differences of DFPT ε∞);
- `compare_raman`: ML - DFT next to the band, experiment for context, and the spectrum plot.
"""

from __future__ import annotations

import io

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays
from aiida_mlresponse.physics import finite_differences as fd
from aiida_mlresponse.physics.born import impose_acoustic_sum_rule
from aiida_mlresponse.physics.crystals import EXPERIMENT_RAMAN_CM1, LATTICE_BOHR, PAPER_LO_RELATIVE_ERROR
from aiida_mlresponse.physics.phonons import gamma_phonons, impose_acoustic_sum_rule_force_constants
from aiida_mlresponse.physics.raman import peak_summary, raman_analysis
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM, HARTREE_TO_CM1

# Arrays of a `raman_analysis` stored on the `ml` / `dft` ArrayData (with the response tensors and the grid).
ANALYSIS_ARRAYS = ('frequencies_cm1', 'raman_tensors', 'lo', 'acoustic', 'to_cm1', 'spectrum_parallel',
                   'spectrum_perpendicular', 'spectrum_total')
UNITS = {'epsilon': 'dimensionless', 'born_charges': 'e', 'born_charges_berry_fd': 'e', 'dchi_dtau': '1/Bohr', 'frequencies_cm1': 'cm^-1',
         'to_cm1': 'cm^-1', 'grid_cm1': 'cm^-1', 'raman_tensors': 'Bohr^2/sqrt(m_e) (arbitrary scale)',
         'spectrum_parallel': 'arb. units per cm^-1', 'spectrum_perpendicular': 'arb. units per cm^-1',
         'spectrum_total': 'arb. units per cm^-1'}


def formula(symbols) -> str:
    return ''.join(dict.fromkeys(symbols))


def cubic_lattice_bohr(cell_angstrom) -> float:
    """The cubic constant of an fcc primitive cell (Ω = a³/4), in Bohr; ValueError for another cell."""
    cell = np.asarray(cell_angstrom, dtype=float)
    lengths = np.linalg.norm(cell, axis=1)
    cosines = [cell[i] @ cell[j] / lengths[i] / lengths[j] for i, j in ((0, 1), (0, 2), (1, 2))]
    if np.ptp(lengths) > 1e-6 * lengths.max() or not np.allclose(cosines, 0.5, atol=1e-6):
        raise ValueError('a lattice constant can only be set on an fcc primitive cell (equal vectors at 60°)')
    return float((4.0 * abs(np.linalg.det(cell))) ** (1.0 / 3.0) * ANGSTROM_TO_BOHR)


def lattice_target_bohr(symbols, cell_angstrom, lattice) -> tuple[float, str]:
    """(a in Bohr, its source) for `lattice`: 'structure' (as given), 'relaxed' / 'paper' (physics.crystals), or Å."""
    if lattice == 'structure':
        return cubic_lattice_bohr(cell_angstrom), 'structure'
    if isinstance(lattice, str):
        known = LATTICE_BOHR.get(formula(symbols), {})
        if lattice not in known:
            raise ValueError(f'no `{lattice}` lattice is known for {formula(symbols)}: give `structure`, one of '
                             f'{sorted(known)} or the cubic lattice constant in Å')
        return float(known[lattice]), lattice
    return float(lattice) * ANGSTROM_TO_BOHR, 'given in Å'


def bohr_arrays(structure: orm.StructureData):
    """(cell, positions) in Bohr and a species index per atom (what the symmetry finder needs) of `structure`."""
    cell, positions, symbols, _ = structure_to_arrays(structure)
    return cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR, np.unique(symbols, return_inverse=True)[1]


@calcfunction
def equilibrium_structure(structure: orm.StructureData, lattice: orm.Data) -> dict:
    """The structure scaled to the cubic lattice `lattice` (Str relaxed | paper | structure, or Float Å), and
    `lattice_used` {a_bohr, a_angstrom, source}."""
    cell, positions, symbols, _ = structure_to_arrays(structure)
    value = lattice.value
    a_bohr, source = lattice_target_bohr(symbols, cell, value)
    scale = a_bohr / cubic_lattice_bohr(cell)
    scaled = structure_from_arrays(cell * scale, positions * scale, symbols)
    return {'structure': scaled, 'lattice_used': orm.Dict({
        'a_bohr': a_bohr, 'a_angstrom': a_bohr * BOHR_TO_ANGSTROM, 'source': source, 'formula': formula(symbols)})}


@calcfunction
def finite_difference_configurations(structure: orm.StructureData, step: orm.Float) -> orm.ArrayData:
    """The ±h displaced copies of `structure` that the crystal's symmetry leaves irreducible
    (`physics.finite_differences`), as `positions` (2 n, N, 3) Å in the order +h, -h per displacement; the
    attributes `atoms` (n,), `directions` (n, 3) and `step_bohr` give the displacements."""
    cell_bohr, positions_bohr, numbers = bohr_arrays(structure)
    displacements = fd.irreducible_displacements(cell_bohr, positions_bohr, numbers)
    displaced = fd.displaced_structures(positions_bohr, displacements, step.value)  # (n, 2, N, 3): +h, -h
    result = orm.ArrayData()
    result.set_array('positions', displaced.reshape(-1, len(numbers), 3) * BOHR_TO_ANGSTROM)
    # the displacements as attributes: the arrays are exactly what `LabelsWorkChain` labels
    result.base.attributes.set('atoms', [int(atom) for atom, _ in displacements])
    result.base.attributes.set('directions', [np.asarray(direction, dtype=float).tolist() for _, direction in displacements])
    result.base.attributes.set('step_bohr', step.value)
    return result


def spectrum_grid(phonon_inputs: tuple, points: int = 1500) -> np.ndarray:
    """A grid (cm⁻¹) that holds every optical Γ mode of the DFT equilibrium run, with and without the LO-TO term
    (0.8 x the lowest TO to 1.25 x the highest LO): the ML and DFT spectra share it."""
    c, masses, eps, z, volume = phonon_inputs
    frequencies = [gamma_phonons(c, masses)[0]] + [
        gamma_phonons(c, masses, z, eps, volume, q_direction=q)[0] for q in np.eye(3)]
    optical = np.concatenate(frequencies) * HARTREE_TO_CM1
    optical = optical[optical > 5.0]
    return np.linspace(0.8 * optical.min(), 1.25 * optical.max(), points)


def _phonon_inputs(phonons: orm.ArrayData, structure: orm.StructureData) -> tuple:
    """(force constants with the acoustic sum rule, masses, DFPT ε∞, DFPT Z* (ASR), Ω in Bohr³) from the equilibrium
    run's `output_arrays` and its structure."""
    c = impose_acoustic_sum_rule_force_constants(phonons.get_array('force_constants_gamma'))
    volume = abs(np.linalg.det(np.asarray(structure.cell))) * ANGSTROM_TO_BOHR**3
    return (c, phonons.get_array('atomic_masses'), phonons.get_array('dielectric_tensor'),
            phonons.get_array('born_charges'), volume)


def _analysis(settings: dict, epsilon, born_charges, dchi_dtau) -> dict:
    c, masses, _, _, volume = settings['phonons']
    return raman_analysis(c, masses, epsilon, born_charges, dchi_dtau, volume, settings['grid_cm1'],
                          q_directions=settings['q_directions'], fwhm_cm1=settings['broadening_cm1'],
                          laser_wavelength_nm=settings['laser_wavelength_nm'], temperature_k=settings['temperature_k'])


def _settings(settings: orm.Dict, phonons: orm.ArrayData, structure: orm.StructureData) -> dict:
    """The analysis settings with the DFT phonon inputs (read once) and the shared spectrum grid."""
    values = settings.get_dict()
    values['phonons'] = _phonon_inputs(phonons, structure)
    values['grid_cm1'] = spectrum_grid(values['phonons'], values.get('grid_points', 1500))
    return values


def _arrays_node(values: dict) -> orm.ArrayData:
    node = orm.ArrayData()
    for name, value in values.items():
        node.set_array(name, np.asarray(value))
    node.base.attributes.set('units', {name: unit for name, unit in UNITS.items() if name in values}
                             | {f'{name}_spread': unit for name, unit in UNITS.items() if f'{name}_spread' in values})
    return node


def _peak_table(central: dict, members: list[dict] | None = None) -> dict:
    """{peak: {quantity: value}} of the central analysis, with `<quantity>_spread` over the members if given."""
    table = peak_summary(central)
    if members:
        member_tables = [peak_summary(member) for member in members]
        for label, peak in table.items():
            for key in list(peak):
                values = [m[label][key] for m in member_tables if label in m]
                peak[f'{key}_spread'] = float(np.std(values, ddof=1)) if len(values) == len(members) else None
    return table


def _symmetrizers(cell_bohr, positions_bohr, numbers) -> dict:
    """Group averages over the crystal's operations for ε∞ (3, 3), Z* (N, 3, 3) and ∂χ/∂τ (N, 3, 3, 3) (the two
    per-atom tensors keep the acoustic sum rule)."""
    operations = fd.symmetry_operations(cell_bohr, positions_bohr, numbers)
    atomic = lambda tensor: impose_acoustic_sum_rule(fd.symmetrize_atomic(operations, tensor))
    return {'epsilon': lambda tensor: fd.symmetrize_cartesian(operations, tensor), 'born_charges': atomic,
            'dchi_dtau': atomic}


@calcfunction
def ml_raman(structure: orm.StructureData, polarization_model, dielectric_model, phonons: orm.ArrayData,
             settings: orm.Dict) -> dict:
    """Raman result of the committees: the central value from the committee mean's ε∞, Z*, ∂χ/∂τ (central heads,
    `committee_response_tensors`), the band from the same analysis done member by member (std over members, not
    calibrated: a model's calibration acts on its values, not on derived quantities). The tensors are averaged over the crystal's operations (the
    attribute `symmetry_violation` says by how much the models broke the symmetry). Force constants from DFT."""
    from aiida_mlresponse.ml.radnet.predict import committee_response_tensors

    cell, positions, _ = bohr_arrays(structure)
    p_committee, p_payload = polarization_model.load()
    e_committee, _ = dielectric_model.load()
    numbers = np.asarray(p_payload['metadata']['atomic_numbers'])
    tensors = committee_response_tensors(p_committee, e_committee, positions, cell, numbers)
    names = ('epsilon', 'born_charges', 'dchi_dtau')
    # The models are not exactly equivariant: their tensors at equilibrium break the crystal's symmetry a little (an
    # anisotropic Z* of a cubic crystal splits the LO peak by q̂). Record by how much, then average over the group.
    symmetrize = _symmetrizers(cell, positions, numbers)
    asymmetry = {}
    for name in names:
        raw = tensors[name]
        tensors[name] = symmetrize[name](raw)
        tensors[f'{name}_members'] = np.array([symmetrize[name](member) for member in tensors[f'{name}_members']])
        asymmetry[name] = float(np.abs(raw - tensors[name]).max() / max(np.abs(tensors[name]).max(), 1e-300))
    values = _settings(settings, phonons, structure)
    central = _analysis(values, *(tensors[name] for name in names))
    members = [_analysis(values, *(tensors[f'{name}_members'][k] for name in names))
               for k in range(len(tensors['epsilon_members']))]
    arrays = dict(tensors)
    arrays.update({f'{name}_spread': tensors[f'{name}_members'].std(axis=0, ddof=1) for name in names})
    arrays.update({name: central[name] for name in ANALYSIS_ARRAYS})
    for name in ('frequencies_cm1', 'spectrum_parallel', 'spectrum_perpendicular', 'spectrum_total'):
        arrays[f'{name}_spread'] = np.std([member[name] for member in members], axis=0, ddof=1)
    arrays['grid_cm1'] = values['grid_cm1']
    node = _arrays_node(arrays)
    node.base.attributes.set('symmetry_violation', asymmetry)  # max |raw - symmetrized| / max |symmetrized|
    return {'arrays': node, 'peaks': orm.Dict(_peak_table(central, members))}


@calcfunction
def dft_raman(structure: orm.StructureData, phonons: orm.ArrayData, configurations: orm.ArrayData,
              displaced, settings: orm.Dict) -> dict:
    """Raman result from ABINIT alone: ε∞ and Z* (acoustic sum rule) of the DFPT equilibrium run, symmetrized over
    the crystal's operations; ∂χ/∂τ by central differences of the DFPT ε∞ of the displaced labels (`displaced`, the
    dataset of `configurations`), rebuilt over every atom and direction by symmetry and the sum rule. Also
    `born_charges_berry_fd`: Z* by central differences of the displaced labels' Berry-phase P, the quantity the P
    committee learns; at a converged k-grid it equals the DFPT Z*, so their gap measures the grid."""
    cell_bohr, positions_bohr, numbers = bohr_arrays(structure)
    order = np.argsort(displaced.get_array('configuration_index'))
    epsilons = displaced.get_array('dielectric_tensor')[order]
    if len(epsilons) != len(configurations.get_array('positions')):
        raise ValueError(f'{len(epsilons)} displaced labels for {len(configurations.get_array("positions"))} '
                         'displaced configurations: the finite differences need every one')
    attributes = configurations.base.attributes
    displacements = list(zip(attributes.get('atoms'), np.asarray(attributes.get('directions'), dtype=float)))
    step = attributes.get('step_bohr')
    dchi = fd.dchi_dtau_from_finite_differences(cell_bohr, positions_bohr, numbers, displacements,
                                                epsilons[0::2], epsilons[1::2], step)
    polarizations = displaced.get_array('polarization')[order]
    charges_fd = fd.born_charges_from_finite_differences(cell_bohr, positions_bohr, numbers, displacements,
                                                         polarizations[0::2], polarizations[1::2], step)
    symmetrize = _symmetrizers(cell_bohr, positions_bohr, numbers)
    epsilon = symmetrize['epsilon'](phonons.get_array('dielectric_tensor'))
    charges = symmetrize['born_charges'](phonons.get_array('born_charges'))
    values = _settings(settings, phonons, structure)
    central = _analysis(values, epsilon, charges, dchi)
    arrays = {'epsilon': epsilon, 'born_charges': charges, 'dchi_dtau': dchi, 'grid_cm1': values['grid_cm1'],
              'born_charges_berry_fd': charges_fd}
    arrays.update({name: central[name] for name in ANALYSIS_ARRAYS})
    return {'arrays': _arrays_node(arrays), 'peaks': orm.Dict(_peak_table(central))}


def _band_row(ml: float, band: float | None, dft: float | None) -> dict:
    row = {'ml': ml, 'band': band}
    if dft is not None:
        difference = ml - dft
        row.update({'dft': dft, 'difference': difference,
                    'relative_difference': difference / dft if dft else None,
                    # the band covers the difference when |ML - DFT| <= one committee standard deviation
                    'covered': bool(band is not None and abs(difference) <= band)})
    return row


def comparison_table(ml_arrays, ml_peaks: dict, dft_arrays=None, dft_peaks: dict | None = None,
                     system: str = '') -> dict:
    """ML ± band against DFT for ε∞ (mean of the diagonal), Z* of atom 0 (mean diagonal), ω_TO, ω_LO (mean over q̂)
    and the LO/TO intensity ratio; with the measured peaks for context."""
    def diagonal_mean(arrays, name, index=None):
        array = arrays.get_array(name) if index is None else arrays.get_array(name)[index]
        return float(np.trace(array) / 3.0)

    dft = dft_arrays is not None
    rows = {
        'epsilon_inf': _band_row(diagonal_mean(ml_arrays, 'epsilon'), diagonal_mean(ml_arrays, 'epsilon_spread'),
                                 diagonal_mean(dft_arrays, 'epsilon') if dft else None),
        'born_charge_atom0': _band_row(diagonal_mean(ml_arrays, 'born_charges', 0),
                                       diagonal_mean(ml_arrays, 'born_charges_spread', 0),
                                       diagonal_mean(dft_arrays, 'born_charges', 0) if dft else None),
    }
    if dft:  # the P committee learns Berry-phase P: its Z* against the finite differences of the same P
        rows['born_charge_atom0_berry_fd'] = _band_row(rows['born_charge_atom0']['ml'], rows['born_charge_atom0']['band'],
                                                       diagonal_mean(dft_arrays, 'born_charges_berry_fd', 0))
    for label in ('TO', 'LO'):
        if label in ml_peaks:
            rows[f'omega_{label}_cm1'] = _band_row(
                ml_peaks[label]['frequency_cm1'], ml_peaks[label]['frequency_cm1_spread'],
                dft_peaks[label]['frequency_cm1'] if dft else None)
    if {'TO', 'LO'} <= set(ml_peaks):  # the band from the members' own ratios (the two intensities are correlated)
        rows['intensity_ratio_LO_TO'] = _band_row(ml_peaks['LO']['ratio_to_TO'], ml_peaks['LO']['ratio_to_TO_spread'],
                                                  dft_peaks['LO']['ratio_to_TO'] if dft else None)
    table = {'rows': rows, 'band': 'one committee standard deviation (members, ddof 1, not calibrated)',
             'experiment_cm1': EXPERIMENT_RAMAN_CM1.get(system), 'paper_lo_relative_error': PAPER_LO_RELATIVE_ERROR}
    if dft:
        table['not_covered'] = sorted(name for name, row in rows.items() if not row['covered'])
    return table


def spectrum_plot(ml_arrays, dft_arrays=None, title: str = '') -> bytes:
    """PNG: the ML total powder spectrum with its band over the DFT one, TO and LO marked (DFT if given, else ML)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    grid = ml_arrays.get_array('grid_cm1')
    reference = dft_arrays if dft_arrays is not None else ml_arrays
    scale = reference.get_array('spectrum_total').max() or 1.0
    ml, band = ml_arrays.get_array('spectrum_total') / scale, ml_arrays.get_array('spectrum_total_spread') / scale
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.fill_between(grid, ml - band, ml + band, color='tab:blue', alpha=0.3, label='ML committee band (±1σ)')
    axes.plot(grid, ml, color='tab:blue', label='ML (radnet committee)')
    if dft_arrays is not None:
        axes.plot(grid, dft_arrays.get_array('spectrum_total') / scale, color='black', ls='--', label='DFT (ABINIT)')
    frequencies, lo, acoustic = (reference.get_array(name) for name in ('frequencies_cm1', 'lo', 'acoustic'))
    for label, mask, style in (('TO', ~lo & ~acoustic, ':'), ('LO', lo & ~acoustic, '-.')):
        if mask.any():
            value = frequencies[mask].mean()
            axes.axvline(value, color='gray', ls=style, lw=1)
            axes.text(value, 1.02, label, ha='center', va='bottom', transform=axes.get_xaxis_transform())
    axes.set_xlabel('Raman shift (cm$^{-1}$)')
    axes.set_ylabel('powder intensity, total (normalized)')
    axes.set_title(title, pad=16)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=120)
    plt.close(figure)
    return buffer.getvalue()


@calcfunction
def compare_raman(lattice_used: orm.Dict, ml_arrays: orm.ArrayData, ml_peaks: orm.Dict, **dft) -> dict:
    """The comparison table (`comparison_table`) and the spectrum plot (SinglefileData PNG); `dft` holds
    `arrays` and `peaks` of `dft_raman` in reference mode, nothing otherwise."""
    system = lattice_used['formula']
    dft_arrays, dft_peaks = dft.get('arrays'), dft['peaks'].get_dict() if 'peaks' in dft else None
    table = comparison_table(ml_arrays, ml_peaks.get_dict(), dft_arrays, dft_peaks, system)
    table['lattice'] = lattice_used.get_dict()
    table['ml_symmetry_violation'] = ml_arrays.base.attributes.get('symmetry_violation', None)
    title = f'{system} powder Raman, a = {lattice_used["a_angstrom"]:.4f} Å ({lattice_used["source"]})'
    png = spectrum_plot(ml_arrays, dft_arrays, title)
    plot = orm.SinglefileData(io.BytesIO(png), filename=f'raman_{system}.png')
    return {'comparison': orm.Dict(table), 'plot': plot}
