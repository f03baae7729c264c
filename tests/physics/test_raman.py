"""Raman tensors, powder invariants and the Stokes spectrum against hand-computed cases."""

import numpy as np
import pytest

from aiida_mlresponse.physics.raman import (
    bose_einstein, laser_frequency, lorentzian, polar_raman_modes, powder_intensities, powder_invariants,
    raman_spectrum, raman_tensors)
from aiida_mlresponse.physics.units import AMU_TO_ME, BOLTZMANN_HA_PER_K, HARTREE_TO_CM1

LEVI_CIVITA_ABS = np.zeros((3, 3, 3))
for a, b, c in [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2)]:
    LEVI_CIVITA_ABS[a, b, c] = 1.0


def test_invariants_of_hand_computed_tensors():
    np.testing.assert_allclose(powder_invariants(np.diag([1.0, 2.0, 3.0])), (12.0, 0.0, 2.0))
    antisymmetric = np.array([[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(powder_invariants(antisymmetric), (0.0, 2.0, 0.0))
    off_diagonal = np.array([[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(powder_invariants(off_diagonal), (0.0, 0.0, 0.5))
    np.testing.assert_allclose(powder_intensities(off_diagonal), (2.0, 1.5))  # depolarization ratio 3/4
    np.testing.assert_allclose(powder_intensities(np.eye(3)), (30.0, 0.0))  # fully polarized


def test_powder_intensities_are_orientational_averages():
    """I_∥ = 30 ⟨α'_zz²⟩ and I_⊥ = 30 ⟨α'_zx²⟩ over random rotations α' = R α Rᵀ; invariants are invariant."""
    rng = np.random.default_rng(0)
    alpha = rng.normal(size=(3, 3))
    q, r = np.linalg.qr(rng.normal(size=(200000, 3, 3)))
    rotations = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar-distributed
    rotated = rotations @ alpha @ np.swapaxes(rotations, 1, 2)
    parallel, perpendicular = powder_intensities(alpha)
    np.testing.assert_allclose(30 * np.mean(rotated[:, 2, 2] ** 2), parallel, rtol=0.02)
    np.testing.assert_allclose(30 * np.mean(rotated[:, 2, 0] ** 2), perpendicular, rtol=0.02)
    np.testing.assert_allclose(np.array(powder_invariants(rotated[:5])).T, np.tile(powder_invariants(alpha), (5, 1)))


def zincblende_model(d=0.7, k=0.05, z_star=2.1, eps=11.0):
    """2-atom Td crystal: ∂χ_αβ/∂τ_κγ = ±d |ε_γαβ|, nearest-neighbour isotropic springs, Z* = ±z I."""
    masses = np.array([69.723, 74.9216])
    dchi = np.stack([d * LEVI_CIVITA_ABS, -d * LEVI_CIVITA_ABS])  # [κ, γ, α, β], sums to zero over κ
    force_constants = k * np.einsum('kl,ab->kalb', np.array([[1.0, -1.0], [-1.0, 1.0]]), np.eye(3))
    born = np.stack([z_star * np.eye(3), -z_star * np.eye(3)])
    return masses, dchi, force_constants, born, eps * np.eye(3)


def test_zincblende_t2_modes_have_only_off_diagonal_tensors():
    masses, dchi, force_constants, born, epsilon = zincblende_model()
    volume = 300.0
    frequencies, alpha = polar_raman_modes(force_constants, masses, dchi, born, epsilon, volume, q_direction=[0, 0, 1])
    reduced_mass = masses.prod() / masses.sum() * AMU_TO_ME
    optical = frequencies > 1e-8
    assert optical.sum() == 3
    lo = np.argmax(frequencies)
    # the LO mode polarized along z: only α_xy = α_yx = ±√(Ω/μ) d
    expected = np.sqrt(volume / reduced_mass) * 0.7
    np.testing.assert_allclose(abs(alpha[lo][0, 1]), expected, rtol=1e-12)
    np.testing.assert_allclose(alpha[lo][0, 1], alpha[lo][1, 0])
    mask = np.ones((3, 3), bool)
    mask[0, 1] = mask[1, 0] = False
    assert np.abs(alpha[lo][mask]).max() < 1e-12 * expected
    # frequencies: ω_TO² = k/μ, ω_LO² = ω_TO² + 4π Z²/(Ω ε μ) (hand-computed)
    to2 = 0.05 / reduced_mass
    np.testing.assert_allclose(frequencies[lo] ** 2, to2 + 4 * np.pi * 2.1**2 / (volume * 11.0 * reduced_mass))
    np.testing.assert_allclose(np.sort(frequencies[optical])[:2] ** 2, to2)
    # the two degenerate TO modes (x, y) together: G2 of xz- and yz-only tensors, 2 (2a)²/2; no G0, G1
    g0, g1, g2 = powder_invariants(alpha[optical])
    np.testing.assert_allclose(g2.sum(), 3 * 2 * expected**2)
    assert abs(g0).max() < 1e-20 and abs(g1).max() < 1e-20
    # acoustic (rigid translation) modes are Raman-silent
    assert np.abs(alpha[~optical]).max() < 1e-12 * expected


def test_raman_tensor_formula_for_a_given_eigenvector():
    masses = np.array([10.0, 20.0])
    dchi = np.random.default_rng(2).normal(size=(2, 3, 3, 3))
    dchi = dchi + np.swapaxes(dchi, -1, -2)
    eigenvector = np.zeros((6, 1))
    eigenvector[2, 0], eigenvector[3, 0] = 0.6, 0.8  # atom 0 along z, atom 1 along x
    expected = np.sqrt(50.0) * (dchi[0, 2] * 0.6 / np.sqrt(10 * AMU_TO_ME) + dchi[1, 0] * 0.8 / np.sqrt(20 * AMU_TO_ME))
    np.testing.assert_allclose(raman_tensors(dchi, eigenvector, masses, 50.0)[0], expected)
    with pytest.raises(ValueError, match='rows'):
        raman_tensors(dchi, np.zeros((5, 1)), masses, 50.0)


def test_bose_einstein_limits():
    omega = 250.0 / HARTREE_TO_CM1
    assert bose_einstein(omega, 0.0) == 0.0
    assert bose_einstein(omega, 1.0) < 1e-100
    hot = 100.0 * omega / BOLTZMANN_HA_PER_K  # k T = 100 ω: n + 1 → k T/ω + 1/2
    np.testing.assert_allclose(bose_einstein(omega, hot) + 1, 100.5, rtol=1e-5)
    # at 300 K, 250 cm^-1: n = 1/(exp(250/208.5) - 1)
    np.testing.assert_allclose(bose_einstein(omega, 300.0), 1 / np.expm1(250 / (300 * 0.69503476)), rtol=1e-6)


def test_spectrum_of_one_mode_by_hand():
    omega, fwhm = 270.0 / HARTREE_TO_CM1, 10.0 / HARTREE_TO_CM1
    alpha = np.diag([1.0, 1.0, 1.0])[None]  # I_∥ = 30, I_⊥ = 0
    laser = laser_frequency(532.0)
    np.testing.assert_allclose(laser * HARTREE_TO_CM1, 18796.99, rtol=1e-6)
    grid = np.array([omega, omega + fwhm / 2])
    spectrum = raman_spectrum([omega], alpha, grid, fwhm)
    prefactor = (laser - omega) ** 4 / (2 * omega) * (bose_einstein(omega, 300.0) + 1) * 30.0
    np.testing.assert_allclose(spectrum, prefactor * np.array([2 / (np.pi * fwhm), 1 / (np.pi * fwhm)]))
    assert np.all(raman_spectrum([omega], alpha, grid, fwhm, polarization='perpendicular') == 0)
    # acoustic modes are skipped; the area of the line is the prefactor (normalized Lorentzian)
    wide = np.linspace(omega - 2000 * fwhm, omega + 2000 * fwhm, 400001)
    area = np.trapezoid(raman_spectrum([0.0, omega], np.concatenate([alpha, alpha]), wide, fwhm), wide)
    np.testing.assert_allclose(area, prefactor, rtol=1e-3)
    np.testing.assert_allclose(np.trapezoid(lorentzian(wide - omega, fwhm), wide), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match='polarization'):
        raman_spectrum([omega], alpha, grid, fwhm, polarization='circular')


def test_polar_spectrum_shows_to_and_lo_peaks():
    masses, dchi, force_constants, born, epsilon = zincblende_model()
    frequencies, alpha = polar_raman_modes(force_constants, masses, dchi, born, epsilon, 300.0, q_direction=[1, 0, 0])
    grid = np.linspace(1, 600, 6000) / HARTREE_TO_CM1
    spectrum = raman_spectrum(frequencies, alpha, grid, 4.0 / HARTREE_TO_CM1)
    peaks = grid[1:-1][(spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] > spectrum[2:])]
    optical = np.sort(frequencies[frequencies > 1e-8])
    np.testing.assert_allclose(peaks * HARTREE_TO_CM1, optical[[0, 2]] * HARTREE_TO_CM1, atol=0.2)


def test_analysis_identifies_lo_and_to_and_its_spectrum_integrates_to_the_peaks():
    """raman_analysis + peak_summary on the Td model: per q̂ three acoustic, two TO and one LO mode at the hand-computed
    frequencies; the TO/LO intensities are the integrals of the spectrum under each peak (area-normalized Lorentzians)."""
    from aiida_mlresponse.physics.raman import peak_summary, raman_analysis

    masses, dchi, force_constants, born, epsilon = zincblende_model()
    volume = 300.0
    reduced_mass = masses.prod() / masses.sum() * AMU_TO_ME
    to = np.sqrt(0.05 / reduced_mass) * HARTREE_TO_CM1
    lo = np.sqrt(0.05 / reduced_mass + 4 * np.pi * 2.1**2 / (volume * 11.0 * reduced_mass)) * HARTREE_TO_CM1
    grid = np.linspace(0.3 * to, 3.0 * lo, 60001)
    analysis = raman_analysis(force_constants, masses, epsilon, born, dchi, volume, grid, fwhm_cm1=0.5)
    assert (analysis['acoustic'].sum(axis=1) == 3).all() and (analysis['lo'].sum(axis=1) == 1).all()
    np.testing.assert_allclose(analysis['frequencies_cm1'][analysis['lo']], lo, rtol=1e-10)
    peaks = peak_summary(analysis)
    assert set(peaks) == {'TO', 'LO'}
    np.testing.assert_allclose([peaks['TO']['frequency_cm1'], peaks['LO']['frequency_cm1']], [to, lo], rtol=1e-10)
    middle = 0.5 * (to + lo)
    for polarization in ('parallel', 'perpendicular', 'total'):
        spectrum = analysis[f'spectrum_{polarization}']
        below, above = grid < middle, grid >= middle
        # the Lorentzian tails beyond the grid and across the midpoint hold < 1 % of each peak at this width
        np.testing.assert_allclose(np.trapezoid(spectrum[below], grid[below]), peaks['TO'][f'intensity_{polarization}'], rtol=0.02)
        np.testing.assert_allclose(np.trapezoid(spectrum[above], grid[above]), peaks['LO'][f'intensity_{polarization}'], rtol=0.02)
    assert peaks['TO']['relative_intensity'] == 1.0 or peaks['LO']['relative_intensity'] == 1.0
    np.testing.assert_allclose(peaks['LO']['ratio_to_TO'], peaks['LO']['intensity_total'] / peaks['TO']['intensity_total'])
