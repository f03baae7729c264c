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
    'bose_einstein', 'lorentzian', 'raman_spectrum', 'polar_raman_modes',
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


def raman_spectrum(frequencies_ha, alpha, grid_ha, fwhm_ha: float, laser_wavelength_nm: float = 532.0,
                   temperature_k: float = 300.0, polarization: str = 'parallel',
                   min_frequency_ha: float = 5.0 / HARTREE_TO_CM1) -> np.ndarray:
    """Powder Stokes spectrum Σ_m I_m(ω) on `grid_ha` (arbitrary units).

    frequencies_ha (nmodes,), alpha (nmodes, 3, 3): modes and their Raman tensors (polar modes already at
    their LO frequencies, see polar_raman_modes). polarization: 'parallel' (I_∥), 'perpendicular' (I_⊥) or
    'total' (I_∥ + I_⊥). Modes below `min_frequency_ha` (acoustic translations, unstable modes) are skipped:
    the 1/ω and Bose factors diverge there.
    """
    frequencies = np.asarray(frequencies_ha, dtype=float)
    parallel, perpendicular = powder_intensities(alpha)
    try:
        activity = {'parallel': parallel, 'perpendicular': perpendicular, 'total': parallel + perpendicular}[polarization]
    except KeyError:
        raise ValueError(f"polarization must be 'parallel', 'perpendicular' or 'total', got {polarization!r}") from None
    laser = laser_frequency(laser_wavelength_nm)
    keep = frequencies > min_frequency_ha
    omega = frequencies[keep]
    weight = (laser - omega) ** 4 / (2.0 * omega) * (bose_einstein(omega, temperature_k) + 1.0) * activity[keep]
    grid = np.asarray(grid_ha, dtype=float)
    return (weight[:, None] * lorentzian(grid[None, :] - omega[:, None], fwhm_ha)).sum(0)


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
