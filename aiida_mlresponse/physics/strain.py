"""Deformations of the 4-atom orthorhombic hcp-Mg cell (seed 002, METHODS.md part B).

A deformation is D = (λa, λb, λc, θa, θb, θc): λ the length of each cell vector relative to the
reference cell, θa the angle between b and c, θb between a and c, θc between a and b, in DEGREES
(the unit of the sampling ranges and of ABINIT's `angdeg`). The reference is D0 = (1, 1, 1, 90, 90, 90).

The deformed cell is written in the lower-triangular orientation (a along x, b in the xy plane),
the one ABINIT's `angdeg` uses; cells are rows, lengths in Bohr.

The linear strain ε (symmetric 3x3) maps to D by the small-distortion form of METHODS.md:
    λa² = (1+ε11)² + ε12² + ε13²,  λb² = ε12² + (1+ε22)² + ε23²,  λc² = ε13² + ε23² + (1+ε33)²,
    π/2 - θa = 2 ε23,  π/2 - θb = 2 ε13,  π/2 - θc = 2 ε12.

Every function takes numpy arrays or torch tensors (any leading batch shape, last axis the six
components or the 3x3 matrix) and returns the same kind, so the stress σ = (1/V) ∂F/∂ε can be
taken by autograd through `strain_to_deformation`.
"""

from __future__ import annotations

import math

import numpy as np

from .crystals import MG_ACELL_BOHR, MG_REFERENCE_XRED

REFERENCE_DEFORMATION = np.array([1.0, 1.0, 1.0, 90.0, 90.0, 90.0])
DEG = math.pi / 180.0

# Offsets of the symmetric form (R1,R2,R3), (½+R1, ½+R2, R3), (-R1, ⅔-R2, ½-R3), (½-R1, ⅙-R2, ½-R3):
# position_i = offset_i + sign_i * R.
SYMMETRIC_FORM_OFFSETS = MG_REFERENCE_XRED.copy()
SYMMETRIC_FORM_SIGNS = np.array([1.0, 1.0, -1.0, -1.0])


class DeformationError(ValueError):
    """Six numbers that do not describe a cell."""


def _is_torch(x) -> bool:
    return type(x).__module__.startswith('torch')


def _backend(x):
    if _is_torch(x):
        import torch

        return torch
    return np


def _as_array(x):
    return x if _is_torch(x) else np.asarray(x, dtype=float)


def _stack(xp, items, axis):
    return xp.stack(items, axis) if xp is np else xp.stack(items, dim=axis)


def cosines(deformation):
    """cos θa, cos θb, cos θc of D (angles in degrees)."""
    d = _as_array(deformation)
    xp = _backend(d)
    return xp.cos(d[..., 3] * DEG), xp.cos(d[..., 4] * DEG), xp.cos(d[..., 5] * DEG)


def gram_determinant(deformation):
    """det of the metric of unit vectors: 1 - cos²α - cos²β - cos²γ + 2 cosα cosβ cosγ.

    Positive if and only if three vectors with these angles close a cell (non-zero volume).
    """
    ca, cb, cc = cosines(deformation)
    return 1.0 - ca**2 - cb**2 - cc**2 + 2.0 * ca * cb * cc


def validate_deformation(deformation) -> np.ndarray:
    """The deformation(s) as a float array (..., 6), or a `DeformationError` that says what is wrong."""
    d = np.asarray(deformation.detach().cpu().numpy() if _is_torch(deformation) else deformation, dtype=float)
    if d.shape[-1:] != (6,):
        raise DeformationError(f'a deformation has six numbers (λa, λb, λc, θa, θb, θc), got shape {d.shape}.')
    if not np.all(np.isfinite(d)):
        raise DeformationError('a deformation contains non-finite numbers.')
    flat = d.reshape(-1, 6)
    for index, row in enumerate(flat):
        where = f'deformation {index} {tuple(float(v) for v in row)}'
        if np.any(row[:3] <= 0.0):
            raise DeformationError(f'{where}: the length ratios λ must be positive.')
        if np.any(row[3:] <= 0.0) or np.any(row[3:] >= 180.0):
            raise DeformationError(f'{where}: the angles θ must lie strictly between 0° and 180°.')
        det = float(gram_determinant(row))
        if det <= 1e-10:
            raise DeformationError(
                f'{where}: these three angles cannot close a cell (Gram determinant {det:.3g} <= 0).'
            )
    return d


def _like(values, array):
    """`values` as an array of the same kind (numpy, or torch with its dtype and device) as `array`."""
    xp = _backend(array)
    if xp is np:
        return np.asarray(values, dtype=float)
    return xp.as_tensor(np.asarray(values, dtype=float), dtype=array.dtype, device=array.device)


def deformation_to_cell(deformation, reference_lengths=MG_ACELL_BOHR):
    """Cell (rows a, b, c; Bohr) of D applied to the orthorhombic reference with `reference_lengths`."""
    d = _as_array(deformation)
    xp = _backend(d)
    ref = _like(reference_lengths, d)
    lengths = d[..., :3] * ref
    ca, cb, cc = cosines(d)
    sc = xp.sin(d[..., 5] * DEG)
    zero = 0.0 * ca
    cy = (ca - cb * cc) / sc
    cz = xp.sqrt(1.0 - cb**2 - cy**2)
    a = _stack(xp, [lengths[..., 0], zero, zero], -1)
    b = _stack(xp, [lengths[..., 1] * cc, lengths[..., 1] * sc, zero], -1)
    c = _stack(xp, [lengths[..., 2] * cb, lengths[..., 2] * cy, lengths[..., 2] * cz], -1)
    return _stack(xp, [a, b, c], -2)


def cell_to_deformation(cell, reference_lengths=MG_ACELL_BOHR):
    """D of a cell (rows, Bohr) relative to the orthorhombic reference; any orientation."""
    m = _as_array(cell)
    xp = _backend(m)
    ref = _like(reference_lengths, m)
    norms = xp.sqrt((m**2).sum(-1))
    a, b, c = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    na, nb, nc = norms[..., 0], norms[..., 1], norms[..., 2]
    theta_a = xp.arccos((b * c).sum(-1) / (nb * nc)) / DEG
    theta_b = xp.arccos((a * c).sum(-1) / (na * nc)) / DEG
    theta_c = xp.arccos((a * b).sum(-1) / (na * nb)) / DEG
    return _stack(xp, [na / ref[0], nb / ref[1], nc / ref[2], theta_a, theta_b, theta_c], -1)


def strain_to_deformation(strain):
    """D of a symmetric linear strain ε (..., 3, 3), METHODS.md small-distortion form."""
    e = _as_array(strain)
    xp = _backend(e)
    e11, e22, e33 = e[..., 0, 0], e[..., 1, 1], e[..., 2, 2]
    e12, e13, e23 = e[..., 0, 1], e[..., 0, 2], e[..., 1, 2]
    lam_a = xp.sqrt((1.0 + e11) ** 2 + e12**2 + e13**2)
    lam_b = xp.sqrt(e12**2 + (1.0 + e22) ** 2 + e23**2)
    lam_c = xp.sqrt(e13**2 + e23**2 + (1.0 + e33) ** 2)
    right = 0.5 * math.pi
    return _stack(
        xp,
        [lam_a, lam_b, lam_c, (right - 2.0 * e23) / DEG, (right - 2.0 * e13) / DEG, (right - 2.0 * e12) / DEG],
        -1,
    )


def deformation_to_strain(deformation):
    """The symmetric ε (..., 3, 3) whose `strain_to_deformation` is D (branch 1 + εii > 0)."""
    d = _as_array(deformation)
    xp = _backend(d)
    right = 0.5 * math.pi
    e23 = 0.5 * (right - d[..., 3] * DEG)
    e13 = 0.5 * (right - d[..., 4] * DEG)
    e12 = 0.5 * (right - d[..., 5] * DEG)
    e11 = xp.sqrt(d[..., 0] ** 2 - e12**2 - e13**2) - 1.0
    e22 = xp.sqrt(d[..., 1] ** 2 - e12**2 - e23**2) - 1.0
    e33 = xp.sqrt(d[..., 2] ** 2 - e13**2 - e23**2) - 1.0
    rows = [
        _stack(xp, [e11, e12, e13], -1),
        _stack(xp, [e12, e22, e23], -1),
        _stack(xp, [e13, e23, e33], -1),
    ]
    return _stack(xp, rows, -2)


def cell_volume(cell):
    """Volume of a cell (rows), numpy or torch, batched."""
    m = _as_array(cell)
    xp = _backend(m)
    return xp.abs(xp.linalg.det(m))


def symmetric_form_positions(r_params):
    """Reduced coordinates (..., 4, 3) of the symmetric form with free parameters R = (R1, R2, R3)."""
    r = _as_array(r_params)
    xp = _backend(r)
    offsets, signs = SYMMETRIC_FORM_OFFSETS, SYMMETRIC_FORM_SIGNS
    if xp is not np:
        offsets = xp.as_tensor(offsets, dtype=r.dtype, device=r.device)
        signs = xp.as_tensor(signs, dtype=r.dtype, device=r.device)
    return offsets + signs[:, None] * r[..., None, :]


def symmetric_form_parameters(xred) -> tuple[np.ndarray, float]:
    """(R1, R2, R3) of four reduced positions and the largest deviation from the symmetric form.

    Positions are compared modulo lattice translations; R is the average of the four estimates,
    taken near the reference (|R| < ½).
    """
    x = np.asarray(xred, dtype=float)
    estimates = SYMMETRIC_FORM_SIGNS[:, None] * (x - SYMMETRIC_FORM_OFFSETS)
    estimates -= np.round(estimates - estimates[0])  # same periodic image as atom 0
    mean = estimates.mean(axis=0)
    deviation = float(np.abs(estimates - mean).max())
    return mean - np.round(mean), deviation
