"""Synthetic data with the shapes of the Mg set, for development and tests only: never report it as Mg.

An analytic, smooth stand-in: energies of strain, R(D) and four fields on a grid. Its deformations are
`synthetic_deformations` (not `sampling.deformations.sample_deformations`, which draws the campaign's D
with another width convention).
"""

from __future__ import annotations

import numpy as np
import torch

from ...physics import strain as st
from ...physics.stress import cauchy_stress
from .data import COLUMNS
from .model import DEFAULT_FIELDS


def synthetic_deformations(n: int, seed: int = 0, half_width_lambda: float = 0.05, half_width_theta: float = 6.0):
    """D from normals of σ = half width / 2, truncated at 2σ: λ in [0.95, 1.05], θ in [84°, 96°] by default.

    The widths are the half widths of the ranges (the σ of `sampling.deformations.sample_deformations` is half
    of them); the rows are drawn in one batch and those outside are dropped, so they differ from that sampler's.
    """
    rng = np.random.default_rng(seed)
    scale = np.array([half_width_lambda] * 3 + [half_width_theta] * 3) / 2.0
    z = rng.normal(size=(4 * n + 16, 6))
    z = z[np.all(np.abs(z) <= 2.0, axis=1)][:n]
    return np.array([1.0, 1.0, 1.0, 90.0, 90.0, 90.0]) + z * scale


#: Ha per cell, Voigt order (ε11, ε22, ε33, ε23, ε13, ε12)
SYNTHETIC_STIFFNESS = np.array([
    [0.35, 0.12, 0.10, 0.0, 0.0, 0.0],
    [0.12, 0.35, 0.10, 0.0, 0.0, 0.0],
    [0.10, 0.10, 0.38, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.10, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.10, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.12],
])


def synthetic_dataset(n: int, grid=(8, 12, 12), seed: int = 0) -> dict:
    """An analytic, smooth stand-in for the Mg labels: energies of strain, R(D) and four fields.

    F: anisotropic quadratic + cubic energy of the linear strain (mHa scale of real Mg);
    fields: periodic Gaussians at the four atoms of the symmetric form with R(D), widths and
    amplitudes depending on the strain. Returns arrays with the keys the benchmark expects.
    """
    d = synthetic_deformations(n, seed)
    e = st.deformation_to_strain(d)
    voigt = np.stack([e[:, 0, 0], e[:, 1, 1], e[:, 2, 2], e[:, 1, 2], e[:, 0, 2], e[:, 0, 1]], 1)
    free = synthetic_free_energy(torch.as_tensor(d)).numpy()
    quad = 0.5 * np.einsum('ni,ij,nj->n', voigt, SYNTHETIC_STIFFNESS, voigt)
    minus_ts = -1e-3 * (1.0 + 2.0 * voigt[:, :3].sum(1) + 3.0 * voigt[:, 5] ** 2)
    band = 1.5 - 2.0 * voigt[:, :3].sum(1) + 0.4 * quad
    r = np.stack([0.2 * voigt[:, 5] * voigt[:, 1], -0.5 * voigt[:, 5] + 0.1 * voigt[:, 3], 0.3 * voigt[:, 4] * voigt[:, 3]], 1)
    axes = [np.arange(m) / m for m in grid]
    frac = np.stack(np.meshgrid(*axes, indexing='ij'), -1)  # (n1, n2, n3, 3)
    cell = st.deformation_to_cell(d)
    positions = st.symmetric_form_positions(r)  # (N, 4, 3)
    out = {name: np.zeros((n, *grid), dtype=np.float32) for name in DEFAULT_FIELDS}
    for i in range(n):
        metric = cell[i] @ cell[i].T
        total = np.zeros(grid)
        for atom in positions[i]:
            delta = frac - atom
            delta -= np.round(delta)
            dist2 = np.einsum('...i,ij,...j->...', delta, metric, delta)
            total += np.exp(-dist2 / (2.0 * (1.3 + 0.5 * voigt[i, 0]) ** 2))
        volume = np.linalg.det(cell[i])
        out['rho'][i] = (0.02 + 0.1 * total) * 574.0 / volume
        out['phi'][i] = -0.5 * total - 0.1 * voigt[i, 1] * np.cos(2 * np.pi * frac[..., 1])
        out['u'][i] = 0.01 * total * (1 + voigt[i, 2]) + 0.002 * np.sin(2 * np.pi * frac[..., 2])
        out['s'][i] = 1e-4 * total**2 * (1 + 3 * voigt[i, 5])
    return {'D': d, 'F': free, 'U': band, 'minus_TS': minus_ts, 'R': r, 'stress': cauchy_stress(synthetic_free_energy, d), **out}


def synthetic_free_energy(deformations: torch.Tensor) -> torch.Tensor:
    """F (B,) of `synthetic_dataset`, Ha: anisotropic quadratic + cubic in the linear strain; differentiable."""
    e = st.deformation_to_strain(deformations)
    voigt = torch.stack([e[:, 0, 0], e[:, 1, 1], e[:, 2, 2], e[:, 1, 2], e[:, 0, 2], e[:, 0, 1]], 1)
    quad = 0.5 * torch.einsum('ni,ij,nj->n', voigt, torch.as_tensor(SYNTHETIC_STIFFNESS, dtype=voigt.dtype), voigt)
    cubic = -0.8 * (voigt[:, 0] + voigt[:, 1] + voigt[:, 2]) ** 3 + 0.3 * voigt[:, 1] * voigt[:, 5] ** 2
    return -4.0 + quad + cubic


def synthetic_mg_strain(n: int, grid=(8, 12, 12), seed: int = 0) -> dict:
    """`synthetic_dataset` as the columns of an 'mg_strain' dataset (`aiida_mlresponse.data.schema`), with the
    cell, volume, relaxed reduced positions, a zero Fermi level and the configuration index filled in."""
    data = synthetic_dataset(n, grid, seed)
    data['cell'] = st.deformation_to_cell(data['D'])
    data['volume'] = st.cell_volume(data['cell'])
    data['configuration_index'] = np.arange(n)
    columns = {COLUMNS[name]: value for name, value in data.items()}
    columns['xred'] = st.symmetric_form_positions(data['R'])
    columns['fermi_energy'] = np.zeros(n)
    return columns
