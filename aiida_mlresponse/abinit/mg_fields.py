"""Electronic fields of the Mg relaxation from ABINIT's netCDF files (arrays in, arrays out).

All fields are returned as (n1, n2, n3) arrays indexed by the reduced FFT grid point
(i/n1, j/n2, k/n3) of the cell, in atomic units:
  rho  e/Bohr³   (DEN.nc, ABINIT's symmetrized density)
  phi  Ha        (VCLMB.nc: V_Hartree + V_loc, "vhartree_vloc")
  u    Ha/Bohr³  u(x) = Σ_nk w_k f_nk E_nk |ψ_nk(x)|², f_nk with the spin factor (ABINIT's occ ∈ [0, 2])
  s    1/Bohr³   s(x) = (1/√π) Σ_nk w_k |ψ_nk(x)|² e^{-t²}(κt³ + t² - ½), t = (E_nk - E_F)/σ, κ = -0.5634

Normalisations, checked against GSR.nc: Σ_k w_k = 1; ∫|ψ|² = 1 with ψ(x) = Ω^{-1/2} Σ_G c_G e^{iGx}
and Σ|c_G|² = 1; ∫f dx = (Ω/N) Σ_grid f. Then ∫u = Σ w f E = e_eigenvalues (U), and
∫s·σ = -σ·entropy = e_entropy (-TS, what ABINIT adds to etotal; ABINIT's `entropy` is
Σ_nk w_k S(t_nk) with S = -(1/√π)e^{-t²}(κt³+t²-½), no spin factor). So s = -S(x) density,
the sign chosen so that ∫s/β = -TS with β = 1/σ (METHODS.md writes the prefactor with a minus,
which would give ∫s/β = +TS with ABINIT's definitions).

The wavefunctions are those of the irreducible k-points; the sum over them is symmetrized with
the space-group operations (as ABINIT does for the density), in reciprocal space so that
fractional translations need not fall on the grid.
"""

from __future__ import annotations

import numpy as np

COLD_SMEARING_KAPPA = -0.5634  # ABINIT occopt 4 (Marzari-Vanderbilt cold smearing)


class FieldError(ValueError):
    """A field file that does not fit the requested grid or the wavefunctions."""


def grid_field(array_c_order) -> np.ndarray:
    """ABINIT's (nspden, n3, n2, n1, 1) netCDF layout -> (n1, n2, n3) of the first component."""
    a = np.asarray(array_c_order)
    return np.ascontiguousarray(a[0, ..., 0].transpose(2, 1, 0))


def cold_smearing_entropy_weight(t):
    """(1/√π) e^{-t²}(κt³ + t² - ½): minus ABINIT's entropy function of occopt 4."""
    t = np.asarray(t, dtype=float)
    return np.exp(-(t**2)) * (COLD_SMEARING_KAPPA * t**3 + t**2 - 0.5) / np.sqrt(np.pi)


def _operation_convention(rotations, translations, xred):
    """ABINIT's netCDF matrices may be stored transposed; keep the form that maps atoms to atoms."""
    x = np.asarray(xred, dtype=float)

    def maps_atoms(mats):
        for s, t in zip(mats, translations):
            images = x @ s.T + t
            diff = images[:, None, :] - x[None, :, :]
            diff -= np.round(diff)
            if not np.all(np.min(np.abs(diff).max(-1), axis=1) < 1e-6):
                return False
        return True

    if maps_atoms(rotations):
        return rotations
    transposed = np.swapaxes(rotations, 1, 2)
    if maps_atoms(transposed):
        return transposed
    raise FieldError('the symmetry operations of the netCDF file do not map the atoms onto each other.')


def symmetrize(field, rotations, translations) -> np.ndarray:
    """(1/N_ops) Σ_{S,t} f(S x + t) for a real field on the reduced grid, computed in G space."""
    shape = np.array(field.shape)
    coefficients = np.fft.fftn(field)
    freqs = np.stack(
        np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n).astype(int) for n in shape], indexing='ij'), axis=-1
    )  # signed integer m' of every grid point
    total = np.zeros_like(coefficients)
    for s, t in zip(rotations, translations):
        mixes = (np.asarray(s) != 0) & (shape[:, None] != shape[None, :])
        if mixes.any():
            raise FieldError(f'the symmetry operation {np.asarray(s).tolist()} maps the grid {shape.tolist()} onto another grid.')
        # f(Sx + t) has coefficient F(m) e^{2πi m·t} at m' = Sᵀ m, i.e. m = S^{-T} m'.
        inverse_transpose = np.rint(np.linalg.inv(np.asarray(s, dtype=float).T)).astype(int)
        m = freqs @ inverse_transpose.T
        index = tuple(np.mod(m[..., axis], shape[axis]) for axis in range(3))
        total += coefficients[index] * np.exp(2j * np.pi * (m @ np.asarray(t, dtype=float)))
    return np.real(np.fft.ifftn(total / len(rotations)))


def wavefunction_fields(wfk, ngfft, volume, tsmear: float, band_cutoff_t: float = 8.0) -> dict:
    """rho, u and s from an open WFK.nc (netCDF4.Dataset), symmetrized; see the module doc."""
    ngfft = tuple(int(n) for n in ngfft)
    if int(wfk.dimensions['number_of_spins'].size) != 1 or int(wfk.dimensions['number_of_spinor_components'].size) != 1:
        raise FieldError('only spin-unpolarized, scalar wavefunctions are supported.')
    istwfk = np.asarray(wfk['istwfk'][:])
    if np.any(istwfk != 1):
        raise FieldError('the WFK file stores half of the plane waves (istwfk != 1): write it with `istwfk *1`.')
    weights = np.asarray(wfk['kpoint_weights'][:], dtype=float)
    eigenvalues = np.asarray(wfk['eigenvalues'][0], dtype=float)
    occupations = np.asarray(wfk['occupations'][0], dtype=float)
    nbands = np.asarray(wfk['number_of_states'][0], dtype=int)
    npws = np.asarray(wfk['number_of_coefficients'][:], dtype=int)
    fermi = float(wfk['fermi_energy'][:])
    gvectors = wfk['reduced_coordinates_of_plane_waves']
    coefficients = wfk['coefficients_of_wavefunctions']
    npoints = int(np.prod(ngfft))

    rho = np.zeros(ngfft)
    u = np.zeros(ngfft)
    s = np.zeros(ngfft)
    for k, weight in enumerate(weights):
        npw, nband = npws[k], nbands[k]
        g = np.asarray(gvectors[k, :npw, :], dtype=int)
        index = tuple(np.mod(g[:, axis], ngfft[axis]) for axis in range(3))
        if np.any(np.abs(g) * 2 >= np.array(ngfft)):
            raise FieldError(f'plane waves of k-point {k} do not fit in the grid {ngfft}.')
        c = np.asarray(coefficients[0, k, :nband, 0, :npw, :], dtype=float)
        t = (eigenvalues[k, :nband] - fermi) / tsmear
        for n in range(nband):
            occ, energy = occupations[k, n], eigenvalues[k, n]
            entropy_weight = cold_smearing_entropy_weight(t[n]) if abs(t[n]) < band_cutoff_t else 0.0
            if occ == 0.0 and entropy_weight == 0.0:
                continue
            box = np.zeros(ngfft, dtype=complex)
            box[index] = c[n, :, 0] + 1j * c[n, :, 1]
            density = np.abs(np.fft.ifftn(box) * npoints) ** 2 / volume  # |ψ(x)|², ∫ = 1
            rho += weight * occ * density
            u += weight * occ * energy * density
            s += weight * entropy_weight * density

    xred = np.asarray(wfk['reduced_atom_positions'][:], dtype=float)
    rotations = _operation_convention(
        np.asarray(wfk['reduced_symmetry_matrices'][:], dtype=int),
        np.asarray(wfk['reduced_symmetry_translations'][:], dtype=float),
        xred,
    )
    translations = np.asarray(wfk['reduced_symmetry_translations'][:], dtype=float)
    return {name: symmetrize(field, rotations, translations) for name, field in (('rho', rho), ('u', u), ('s', s))}


def integrate(field, volume: float) -> float:
    """∫ f dx over the cell on the uniform reduced grid."""
    return float(np.sum(field) * volume / np.asarray(field).size)
