"""Raman tensors of Γ phonons and the powder-averaged Stokes spectrum (atomic units inside).

Conventions (shared with physics.phonons and ml.derivatives):
- ∂χ_αβ/∂τ_κγ as an array (natom, 3, 3, 3) indexed [κ, γ, α, β], in Bohr⁻¹, with χ = (ε∞ - 1)/4π;
- eigenvectors e^m: orthonormal columns of the dynamical matrix D = C/√(M_κ M_κ'), shape (3 natom, nmodes),
  row index 3κ + γ (numpy.linalg.eigh, as returned by physics.phonons.gamma_phonons);
- masses in amu (converted to electron masses here), volume Ω in Bohr³, frequencies in Ha.

Raman tensor of mode m (Veithen, Gonze, Ghosez 2005):  α^m_αβ = √Ω Σ_κγ (∂χ_αβ/∂τ_κγ) e^m_κγ / √M_κ.
For polar modes with q̂ ≠ 0 this keeps only the ionic term: the electro-optic correction of LO modes
(χ⁽²⁾ · Z* · e^m) needs the second-order susceptibility, which the models here do not predict.

Powder average (rotation invariants, METHODS.md):
    G0 = (α_xx + α_yy + α_zz)²/3,
    G1 = [(α_xy - α_yx)² + (α_xz - α_zx)² + (α_yz - α_zy)²]/2,
    G2 = [(α_xy + α_yx)² + (α_xz + α_zx)² + (α_yz + α_zy)²]/2 + [(α_xx - α_yy)² + (α_xx - α_zz)² + (α_yy - α_zz)²]/3,
    I_∥ = 10 G0 + 4 G2,  I_⊥ = 5 G1 + 3 G2   (30 ⟨α_zz²⟩ and 30 ⟨α_zx²⟩ over orientations),
and the Stokes line of mode m:
    I_m(ω) = (ω_L - ω_m)⁴ / (2 ω_m) · (n_BE(ω_m, T) + 1) · I_{∥ or ⊥} · L(ω - ω_m, γ),
with L the area-normalized Lorentzian of full width at half maximum γ. Intensities are in arbitrary units.
"""

from __future__ import annotations

import numpy as np

from .phonons import gamma_phonons
from .units import AMU_TO_ME, BOLTZMANN_HA_PER_K, HARTREE_TO_CM1

__all__ = [
    'laser_frequency', 'mode_displacements', 'raman_tensors', 'powder_invariants', 'powder_intensities',
    'bose_einstein', 'lorentzian', 'stokes_weights', 'raman_spectrum', 'polar_raman_modes', 'lo_modes',
    'raman_analysis', 'peak_summary',
]


def laser_frequency(wavelength_nm: float = 532.0) -> float:
    """Photon energy (Ha) of a laser of the given vacuum wavelength: 1e7/λ[nm] cm⁻¹."""
    return 1e7 / wavelength_nm / HARTREE_TO_CM1


def mode_displacements(eigenvectors, masses_amu) -> np.ndarray:
    """Cartesian displacement patterns u^m_κγ = e^m_κγ / √M_κ (M in electron masses), shape (nmodes, natom, 3).

    Feed these to ml.derivatives.chi_directional_derivatives (forward mode) and multiply by √Ω to get
    the Raman tensors without the full Jacobian.
    """
    e = np.asarray(eigenvectors, dtype=float)
    masses = np.asarray(masses_amu, dtype=float) * AMU_TO_ME
    natom = len(masses)
    if e.shape[0] != 3 * natom:
        raise ValueError(f'eigenvectors must have 3 natom = {3 * natom} rows (columns are modes), got {e.shape}')
    return e.T.reshape(-1, natom, 3) / np.sqrt(masses)[None, :, None]


def raman_tensors(dchi_dtau, eigenvectors, masses_amu, volume_bohr3: float) -> np.ndarray:
    """α^m_αβ = √Ω Σ_κγ (∂χ_αβ/∂τ_κγ) e^m_κγ / √M_κ, shape (nmodes, 3, 3).

    dchi_dtau: (natom, 3, 3, 3) [κ, γ, α, β]; eigenvectors: (3 natom, nmodes) columns.
    """
    dchi = np.asarray(dchi_dtau, dtype=float)
    u = mode_displacements(eigenvectors, masses_amu)
    if dchi.shape != (u.shape[1], 3, 3, 3):
        raise ValueError(f'dchi_dtau must be (natom, 3, 3, 3) = {(u.shape[1], 3, 3, 3)}, got {dchi.shape}')
    return np.sqrt(volume_bohr3) * np.einsum('kgab,mkg->mab', dchi, u)


def powder_invariants(alpha) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G0, G1, G2) of Raman tensors (..., 3, 3)."""
    a = np.asarray(alpha, dtype=float)
    xx, yy, zz = a[..., 0, 0], a[..., 1, 1], a[..., 2, 2]
    xy, yx, xz, zx, yz, zy = a[..., 0, 1], a[..., 1, 0], a[..., 0, 2], a[..., 2, 0], a[..., 1, 2], a[..., 2, 1]
    g0 = (xx + yy + zz) ** 2 / 3.0
    g1 = ((xy - yx) ** 2 + (xz - zx) ** 2 + (yz - zy) ** 2) / 2.0
    g2 = ((xy + yx) ** 2 + (xz + zx) ** 2 + (yz + zy) ** 2) / 2.0 + ((xx - yy) ** 2 + (xx - zz) ** 2 + (yy - zz) ** 2) / 3.0
    return g0, g1, g2


def powder_intensities(alpha) -> tuple[np.ndarray, np.ndarray]:
    """(I_∥, I_⊥) = (10 G0 + 4 G2, 5 G1 + 3 G2) of Raman tensors (..., 3, 3)."""
    g0, g1, g2 = powder_invariants(alpha)
    return 10.0 * g0 + 4.0 * g2, 5.0 * g1 + 3.0 * g2


def bose_einstein(frequency_ha, temperature_k: float) -> np.ndarray:
    """Phonon occupation n = 1/(exp(ω/k_B T) - 1); 0 at T = 0. Frequencies > 0, in Ha."""
    frequency = np.asarray(frequency_ha, dtype=float)
    if temperature_k < 0:
        raise ValueError('temperature must be >= 0 K')
    if temperature_k == 0:
        return np.zeros_like(frequency)
    return 1.0 / np.expm1(frequency / (BOLTZMANN_HA_PER_K * temperature_k))


def lorentzian(x, fwhm: float) -> np.ndarray:
    """Area-normalized Lorentzian of full width at half maximum `fwhm` (same unit as x)."""
    half = 0.5 * fwhm
    return half / np.pi / (np.asarray(x, dtype=float) ** 2 + half**2)


def stokes_weights(frequencies_ha, activity, laser_wavelength_nm: float = 532.0, temperature_k: float = 300.0,
                   min_frequency_ha: float = 5.0 / HARTREE_TO_CM1) -> np.ndarray:
    """Integrated Stokes intensity of each mode, (ω_L - ω)⁴/(2ω) (n_BE + 1) · activity; 0 below `min_frequency_ha`
    (acoustic translations and unstable modes, where the 1/ω and Bose factors diverge)."""
    frequencies = np.asarray(frequencies_ha, dtype=float)
    keep = frequencies > min_frequency_ha
    omega = frequencies[keep]
    laser = laser_frequency(laser_wavelength_nm)
    weight = np.zeros_like(frequencies)
    weight[keep] = ((laser - omega) ** 4 / (2.0 * omega) * (bose_einstein(omega, temperature_k) + 1.0)
                    * np.broadcast_to(np.asarray(activity, dtype=float), frequencies.shape)[keep])
    return weight


def _activity(alpha, polarization: str) -> np.ndarray:
    parallel, perpendicular = powder_intensities(alpha)
    try:
        return {'parallel': parallel, 'perpendicular': perpendicular, 'total': parallel + perpendicular}[polarization]
    except KeyError:
        raise ValueError(f"polarization must be 'parallel', 'perpendicular' or 'total', got {polarization!r}") from None


def raman_spectrum(frequencies_ha, alpha, grid_ha, fwhm_ha: float, laser_wavelength_nm: float = 532.0,
                   temperature_k: float = 300.0, polarization: str = 'parallel',
                   min_frequency_ha: float = 5.0 / HARTREE_TO_CM1) -> np.ndarray:
    """Powder Stokes spectrum Σ_m I_m(ω) on `grid_ha` (arbitrary units).

    frequencies_ha (nmodes,), alpha (nmodes, 3, 3): modes and their Raman tensors (polar modes already at
    their LO frequencies, see polar_raman_modes). polarization: 'parallel' (I_∥), 'perpendicular' (I_⊥) or
    'total' (I_∥ + I_⊥). Modes below `min_frequency_ha` are skipped (`stokes_weights`).
    """
    frequencies = np.asarray(frequencies_ha, dtype=float)
    weight = stokes_weights(frequencies, _activity(alpha, polarization), laser_wavelength_nm, temperature_k,
                            min_frequency_ha)
    grid = np.asarray(grid_ha, dtype=float)
    return (weight[:, None] * lorentzian(grid[None, :] - frequencies[:, None], fwhm_ha)).sum(0)


def polar_raman_modes(force_constants, masses_amu, dchi_dtau, born_charges, epsilon, volume_bohr3,
                      q_direction=None) -> tuple[np.ndarray, np.ndarray]:
    """Γ frequencies (Ha) and Raman tensors (nmodes, 3, 3), with the LO-TO term for q → 0 along q_direction.

    Phonons from physics.phonons.gamma_phonons (force constants in Ha/Bohr², natom x 3 x natom x 3); without
    q_direction the modes are the analytic (TO) ones. To compare with a powder measurement, average the
    spectra over several q̂ (e.g. x, y, z).
    """
    frequencies, eigenvectors = gamma_phonons(force_constants, masses_amu, born_charges, epsilon, volume_bohr3,
                                              q_direction=q_direction)
    return frequencies, raman_tensors(dchi_dtau, eigenvectors, masses_amu, volume_bohr3)


def lo_modes(eigenvectors, masses_amu, born_charges, q_direction, relative_tolerance: float = 1e-3) -> np.ndarray:
    """Which modes (columns of `eigenvectors`) are longitudinal polar modes for q → 0 along `q_direction`.

    A mode couples to the macroscopic field along q̂ when its mode charge q̂ · Σ_κ Z*_κ u^m_κ (u = e/√M) is not
    zero; the LO-TO term shifts exactly those modes. Returns a boolean mask (nmodes,); all False for Z* = 0.
    """
    q = np.asarray(q_direction, dtype=float)
    q = q / np.linalg.norm(q)
    u = mode_displacements(eigenvectors, masses_amu)  # (nmodes, natom, 3)
    charge = np.einsum('a,kab,mkb->m', q, np.asarray(born_charges, dtype=float), u)
    largest = np.abs(charge).max(initial=0.0)
    return np.abs(charge) > relative_tolerance * largest if largest > 0 else np.zeros(len(charge), dtype=bool)


def raman_analysis(force_constants, masses_amu, epsilon, born_charges, dchi_dtau, volume_bohr3, grid_cm1,
                   q_directions=np.eye(3), fwhm_cm1: float = 4.0, laser_wavelength_nm: float = 532.0,
                   temperature_k: float = 300.0) -> dict:
    """Everything a powder Raman measurement is compared with, from one set of tensors (atomic units in, cm⁻¹ out).

    For each q̂ of `q_directions` (q → 0 along q̂): the Γ modes with the LO-TO term, their Raman tensors, which are
    LO (`lo_modes`) and which are acoustic (below 5 cm⁻¹), the integrated Stokes intensities; the powder spectra
    (parallel, perpendicular, total) on `grid_cm1` averaged over the q̂ (a powder samples every direction; x, y, z
    is the cubic average). Returns arrays: frequencies_cm1 (nq, nmodes), raman_tensors (nq, nmodes, 3, 3),
    lo (nq, nmodes) bool, acoustic (nq, nmodes) bool, intensities_{parallel,perpendicular,total} (nq, nmodes),
    spectrum_{parallel,perpendicular,total} (ngrid,), to_cm1 (nmodes,) the analytic modes.
    """
    grid = np.asarray(grid_cm1, dtype=float) / HARTREE_TO_CM1
    fwhm = fwhm_cm1 / HARTREE_TO_CM1
    min_frequency = 5.0 / HARTREE_TO_CM1
    directions = np.atleast_2d(np.asarray(q_directions, dtype=float))
    out = {key: [] for key in ('frequencies_cm1', 'raman_tensors', 'lo', 'acoustic', 'intensities_parallel',
                               'intensities_perpendicular', 'intensities_total')}
    spectra = {key: np.zeros_like(grid) for key in ('parallel', 'perpendicular', 'total')}
    for q in directions:
        frequencies, eigenvectors = gamma_phonons(force_constants, masses_amu, born_charges, epsilon, volume_bohr3,
                                                  q_direction=q)
        alpha = raman_tensors(dchi_dtau, eigenvectors, masses_amu, volume_bohr3)
        out['frequencies_cm1'].append(frequencies * HARTREE_TO_CM1)
        out['raman_tensors'].append(alpha)
        out['lo'].append(lo_modes(eigenvectors, masses_amu, born_charges, q))
        out['acoustic'].append(frequencies <= min_frequency)
        for polarization in spectra:
            out[f'intensities_{polarization}'].append(stokes_weights(
                frequencies, _activity(alpha, polarization), laser_wavelength_nm, temperature_k, min_frequency))
            spectra[polarization] += raman_spectrum(frequencies, alpha, grid, fwhm, laser_wavelength_nm, temperature_k,
                                                    polarization, min_frequency) / len(directions)
    result = {key: np.asarray(value) for key, value in out.items()}
    result.update({f'spectrum_{key}': value * 1.0 / HARTREE_TO_CM1 for key, value in spectra.items()})  # per cm⁻¹
    result['to_cm1'] = gamma_phonons(force_constants, masses_amu)[0] * HARTREE_TO_CM1
    return result


def peak_summary(analysis: dict) -> dict:
    """The TO and LO peaks of a `raman_analysis`: mean frequency (cm⁻¹) of the optical modes of each kind over the
    q̂, and their intensities summed over modes and averaged over q̂ (parallel, perpendicular, total), with the
    total relative to the strongest peak (`relative_intensity`) and to the TO peak (`ratio_to_TO`). For the 2-atom zincblende crystals there is one TO and one LO peak; a
    nonpolar crystal has no LO entry.
    """
    optical = ~analysis['acoustic']
    peaks = {}
    for label, mask in (('TO', optical & ~analysis['lo']), ('LO', optical & analysis['lo'])):
        if not mask.any():
            continue
        nq = len(mask)
        peaks[label] = {'frequency_cm1': float(analysis['frequencies_cm1'][mask].mean())}
        for polarization in ('parallel', 'perpendicular', 'total'):
            peaks[label][f'intensity_{polarization}'] = float(analysis[f'intensities_{polarization}'][mask].sum() / nq)
    strongest = max(peak['intensity_total'] for peak in peaks.values())
    for peak in peaks.values():
        peak['relative_intensity'] = peak['intensity_total'] / strongest if strongest > 0 else 0.0
        if 'TO' in peaks and peaks['TO']['intensity_total'] > 0:
            peak['ratio_to_TO'] = peak['intensity_total'] / peaks['TO']['intensity_total']
    return peaks
