"""Atom-centred voxel cubes of the smooth density ρ̃(r) = Σ_J Z_J exp(-|r - R_J|² / 2σ²) (radnet input).

Units: Bohr everywhere in this module (positions, cell, spacing, σ, radii). The public radnet data are
in Å: multiply by ``physics.units.ANGSTROM_TO_BOHR`` before calling.

For each atom I the cube holds n³ voxels with spacing h, centred exactly on R_I (not snapped to a global
grid, so the cube is a smooth, exactly translation-invariant function of the atomic positions), times the
spherical window W(r) = ½ erfc((|r| - r_w) / w) around the atom:

    cube_I[a, b, c] = W(x_abc) Σ_J Z_J s(|d_IJ|) g(x_a - d_IJ,x) g(x_b - d_IJ,y) g(x_c - d_IJ,z),

with x_abc the voxel offsets, d_IJ = R_J + S·cell - R_I running over the neighbours (periodic images
included, J = I itself too) within the radial cutoff r_c, g(u) = exp(-u² / 2σ²), and s a C² switch that
takes the pair weight from 1 (|d| <= r_c - switch_width) to 0 (|d| = r_c), so values are continuous as a
neighbour crosses the cutoff. The Gaussian is separable along the Cartesian axes of the cube: the cost is
O(neighbours · n³) per atom with only O(neighbours · n²) memory, and the whole grid is never evaluated.
The default r_c makes s = 1 for every atom whose Gaussian reaches a voxel the window does not suppress
(reach 5σ, window < 1e-11 beyond r_w + 5w), so the cubes agree with the untruncated density to about
Z·exp(-12.5) ≈ 4e-6·Z; pass a larger ``cutoff`` to tighten that.

Neighbours come from a cell list (numpy, O(N) for large cells, any triclinic cell, images of small cells
included). The list only decides which pairs are evaluated; the vectors d_IJ are recomputed in torch from
the positions, so cubes are differentiable with respect to positions (and cell) by autograd, forward-mode
AD and torch.func transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ['AtomCubes', 'NeighbourList', 'neighbour_pairs']

#: (centre atom, bin offset, slot) triples per block of `neighbour_pairs` (bounds its memory for large cells).
_PAIR_BLOCK = 1 << 16  # (measured fastest for a 9826-atom cell: the arrays stay in cache)
#: (cube, pair) entries per block of `AtomCubes.batch` (measured on 16-atom BN cells, ~190 pairs per cube).
_CUBE_BLOCK = 1 << 14


def neighbour_pairs(positions, cell, cutoff: float):
    """All pairs (i, j, S) with |R_j + S·cell - R_i| < cutoff, periodic in all three directions.

    positions (N, 3) and cell (3, 3, rows are lattice vectors) in the same length unit. Self pairs
    (i, i, 0) are included; images of j (and of i itself) appear once per image vector S. Cell list:
    bins of perpendicular width >= cutoff, so the work is O(N) for cells larger than the cutoff; smaller
    cells scan as many neighbouring bins (images) as the cutoff needs.

    Returns integer arrays ``i`` (P,), ``j`` (P,), ``shift`` (P, 3), sorted by i.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float)
    n_atoms = len(positions)
    fractional = positions @ np.linalg.inv(cell)
    wrap = np.floor(fractional)
    fractional -= wrap
    wrapped = fractional @ cell

    volume = abs(np.linalg.det(cell))
    spacing = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)  # between lattice planes
    n_bins = np.maximum(1, np.floor(spacing / cutoff).astype(int))
    reach = np.ceil(cutoff * n_bins / spacing - 1e-12).astype(int)
    bins = np.minimum((fractional * n_bins).astype(int), n_bins - 1)
    flat = np.ravel_multi_index(bins.T, n_bins)

    # Padded table of the atoms in each bin (-1 = empty slot).
    order = np.argsort(flat, kind='stable')
    counts = np.bincount(flat, minlength=int(np.prod(n_bins)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(n_atoms) - starts[flat[order]]
    table = np.full((len(counts), max(1, counts.max())), -1, dtype=np.int64)
    table[flat[order], slot] = order

    # Every (centre atom, bin offset, slot) at once, in blocks of centre atoms that bound the memory. The
    # offsets of small cells reach several images of the same bin: each is a distinct image vector.
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing='ij'), axis=-1).reshape(-1, 3)
    block = max(1, _PAIR_BLOCK // (len(offsets) * table.shape[1]))
    found_i, found_j, found_shift = [], [], []
    for first in range(0, n_atoms, block):
        centre = np.arange(first, min(first + block, n_atoms))
        target = bins[centre, None, :] + offsets  # (C, O, 3)
        bin_shift = np.floor_divide(target, n_bins)
        target -= bin_shift * n_bins
        candidates = table[np.ravel_multi_index(target.reshape(-1, 3).T, n_bins)].reshape(target.shape[:2] + (-1,))
        vectors = wrapped[candidates] + (bin_shift @ cell)[:, :, None, :] - wrapped[centre, None, None, :]
        keep = (candidates >= 0) & (np.einsum('...k,...k->...', vectors, vectors) < cutoff**2)
        # nonzero runs over (centre, offset, slot) in order: the pairs come sorted by i.
        c, o, _ = np.nonzero(keep)
        i, j = centre[c], candidates[keep]
        found_i.append(i)
        found_j.append(j)
        # Image vector in terms of the unwrapped input positions.
        found_shift.append(bin_shift[c, o] + wrap[i] - wrap[j])
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    shift = np.concatenate(found_shift).astype(np.int64)
    return i, j, shift


@dataclass
class NeighbourList:
    """Neighbours of each centre atom, padded to a common length M.

    ``index`` (N, M): neighbour atom; ``shift`` (N, M, 3): integer image vector; ``mask`` (N, M): True
    for real entries. Padded entries point at the centre atom itself with mask False (weight 0).
    """

    index: torch.Tensor
    shift: torch.Tensor
    mask: torch.Tensor
    cutoff: float

    @classmethod
    def build(cls, positions, cell, cutoff: float) -> 'NeighbourList':
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        n_atoms = len(positions)
        i, j, shift = neighbour_pairs(positions, cell, cutoff)
        counts = np.bincount(i, minlength=n_atoms)
        rank = np.arange(len(i)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[i]
        width = int(counts.max())
        index = np.tile(np.arange(n_atoms)[:, None], (1, width))
        shifts = np.zeros((n_atoms, width, 3), dtype=np.int64)
        mask = np.zeros((n_atoms, width), dtype=bool)
        index[i, rank] = j
        shifts[i, rank] = shift
        mask[i, rank] = True
        return cls(torch.from_numpy(index), torch.from_numpy(shifts), torch.from_numpy(mask), float(cutoff))

    def __len__(self):
        return self.index.shape[0]

    @property
    def n_pairs(self) -> int:
        return int(self.mask.sum())


class AtomCubes:
    """Per-atom cubes of the smooth density, differentiable with respect to positions (all lengths in Bohr).

    Parameters
    ----------
    n: voxels per cube edge (odd, so the atom sits on the centre voxel).
    spacing: voxel spacing h (Bohr). The radnet paper used half the DFT FFT grid; the default 0.875 Bohr with
        n = 9 spans ±3.5 Bohr, the window radius, as the authors' 9³ cubes did.
    sigma: Gaussian width σ (Bohr).
    window_radius, window_width: W(r) = ½ erfc((r - window_radius) / window_width), radius 3.5 Bohr as in
        the paper.
    cutoff: radial cutoff r_c (Bohr) of the neighbour pairs; default: the window's reach (the smaller of the
        cube's half-diagonal and window_radius + 5 window_width) + 5σ + switch_width.
    switch_width: width (Bohr) of the smooth switch that ends at r_c; default σ.
    dtype, device: of the cubes (torch.float32 for training speed, torch.float64 for finite-difference
        checks and labels that need it).

    ``cubes(positions, cell, numbers)`` returns (N, 1, n, n, n). For many configurations of one cell,
    ``cubes.batch(positions (B, N, 3), cell, numbers)`` returns (B, N, 1, n, n, n) with one neighbour list.
    For autograd-heavy work build the list once (``neighbours(...)``) and call ``evaluate`` (pure torch).
    """

    def __init__(self, n: int = 9, spacing: float = 0.875, sigma: float = 1.0, window_radius: float = 3.5,
                 window_width: float = 0.5, cutoff: float | None = None, switch_width: float | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        if n < 1 or n % 2 == 0:
            raise ValueError(f'n must be a positive odd number of voxels, got {n}')
        if min(spacing, sigma, window_width) <= 0 or window_radius <= 0:
            raise ValueError('spacing, sigma, window_radius and window_width must be positive (Bohr)')
        self.n, self.spacing, self.sigma = int(n), float(spacing), float(sigma)
        self.window_radius, self.window_width = float(window_radius), float(window_width)
        self.switch_width = float(sigma if switch_width is None else switch_width)
        half_diagonal = np.sqrt(3.0) * spacing * (n - 1) / 2
        window_reach = min(half_diagonal, window_radius + 5.0 * window_width)
        self.cutoff = float(window_reach + 5.0 * sigma + self.switch_width if cutoff is None else cutoff)
        if not 0 < self.switch_width <= self.cutoff:
            raise ValueError('switch_width must be in (0, cutoff]')
        self.dtype, self.device = dtype, torch.device('cpu') if device is None else torch.device(device)

        self.offsets = (torch.arange(n, dtype=dtype, device=self.device) - (n - 1) / 2) * spacing  # (n,)
        x, y, z = torch.meshgrid(self.offsets, self.offsets, self.offsets, indexing='ij')
        self.voxel_radius = torch.sqrt(x**2 + y**2 + z**2)  # (n, n, n) distance of each voxel from the atom
        self.window = 0.5 * torch.erfc((self.voxel_radius - window_radius) / window_width)  # (n, n, n)

    def __repr__(self):
        return (f'AtomCubes(n={self.n}, spacing={self.spacing}, sigma={self.sigma}, '
                f'window_radius={self.window_radius}, window_width={self.window_width}, cutoff={self.cutoff}, '
                f'switch_width={self.switch_width}, dtype={self.dtype})')

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.n, self.n, self.n)

    # ------------------------------------------------------------------ neighbours
    def neighbours(self, positions, cell, skin: float = 0.0, tolerance: float | None = None) -> NeighbourList:
        """Neighbour list for `positions` (N, 3) or (B, N, 3) (Bohr) valid for displacements up to skin/2.

        For a batch the list is built on the mean configuration with the skin enlarged by twice the largest
        displacement from it, so it holds every pair that is inside the cutoff in any configuration. With a
        `tolerance`, pairs farther than `negligible_beyond(tolerance)` (< cutoff) are left out: each adds less than
        tolerance·Z_J to any voxel (for predictions in float32; a list for finite differences keeps the cutoff, so
        nothing jumps when a pair crosses that shorter radius).
        """
        positions = _as_numpy(positions)
        if positions.ndim == 3:
            mean = positions.mean(axis=0)
            skin += 2.0 * np.linalg.norm(positions - mean, axis=-1).max()
            positions = mean
        radius = self.cutoff if tolerance is None else min(self.cutoff, self.negligible_beyond(tolerance))
        return NeighbourList.build(positions, _as_numpy(cell), radius + skin)

    def negligible_beyond(self, tolerance: float) -> float:
        """The pair distance d (Bohr) beyond which one atom's Gaussian adds less than `tolerance` (per unit charge) to
        every voxel of a cube: max over voxels x of W(|x|) exp(-(d - |x|)² / 2σ²) < tolerance, a bound because
        |x - d_IJ| >= d - |x|. For the default cube (n 9, h 0.875, r_w 3.5, w 0.5, σ 1): 9.2 Bohr at 1e-7, 10.0 at
        1e-9, against the 12 Bohr cutoff (0.58 of the pairs at 1e-9)."""
        radius = self.voxel_radius.double().numpy().ravel()
        window = self.window.double().numpy().ravel()
        keep = window > 0
        radius, log_window = radius[keep], np.log(window[keep])
        # W exp(-(d - r)²/2σ²) < tol  <=>  d > r + σ sqrt(2 (log W - log tol)) for each voxel with W > tol
        above = log_window > np.log(tolerance)
        if not above.any():
            return 0.0
        return float(np.max(radius[above] + self.sigma * np.sqrt(2.0 * (log_window[above] - np.log(tolerance)))))

    # ------------------------------------------------------------------ evaluation
    def __call__(self, positions, cell, numbers) -> torch.Tensor:
        """Cubes (N, 1, n, n, n) for one configuration; positions (N, 3) and cell (3, 3) in Bohr."""
        return self.evaluate(positions, cell, numbers, self.neighbours(positions, cell))

    def batch(self, positions, cell, numbers, neighbours: NeighbourList | None = None) -> torch.Tensor:
        """Cubes (B, N, 1, n, n, n) for B configurations (B, N, 3) of one cell, with one neighbour list (made here
        for all of them when not given), evaluated a few configurations at a time: blocks of about
        `_CUBE_BLOCK` (cube, pair) entries keep their intermediate tensors in the CPU cache (3x faster for a
        pool of 16-atom cells than one pass over 64 configurations)."""
        neighbours = neighbours or self.neighbours(positions, cell)
        positions, cell, numbers = self._tensor(positions), self._tensor(cell), self._tensor(numbers)  # once for all
        step = max(1, _CUBE_BLOCK // neighbours.index.numel())
        return torch.cat([self.evaluate(positions[first:first + step], cell, numbers, neighbours)
                          for first in range(0, len(positions), step)])

    def evaluate(self, positions, cell, numbers, neighbours: NeighbourList, centres=None) -> torch.Tensor:
        """Cubes from a prepared neighbour list, pure torch (differentiable, usable under torch.func).

        positions: (N, 3) or (B, N, 3) Bohr; a tensor that requires grad keeps the graph. centres: optional
        indices of the atoms whose cubes are wanted (to process a large cell in chunks). Returns
        (len(centres), 1, n, n, n), with a leading B for batched positions.
        """
        positions = self._tensor(positions)
        cell = self._tensor(cell)
        charges = self._tensor(numbers)
        index, shift, mask = neighbours.index, neighbours.shift, neighbours.mask
        if centres is None:
            centres = torch.arange(len(neighbours))
        else:
            centres = torch.as_tensor(centres, dtype=torch.long)
            index, shift, mask = index[centres], shift[centres], mask[centres]
        index, shift, mask = index.to(self.device), shift.to(self.device), mask.to(self.device)
        centres = centres.to(self.device)

        image = shift.to(self.dtype) @ cell  # (C, M, 3)
        vectors = positions[..., index, :] + image - positions[..., centres, :].unsqueeze(-2)  # (..., C, M, 3)
        weights = charges[index] * mask.to(self.dtype) * self._switch(vectors)  # (..., C, M)
        return self._cubes(vectors, weights).unsqueeze(-4)

    def cubes_and_pullback(self, positions, cell, numbers, neighbours: NeighbourList):
        """Cubes (N, 1, n, n, n) of one configuration (N, 3) Bohr and their pullback, without autograd.

        ``pullback(cotangents)`` maps cotangents (K, N, 1, n, n, n) (e.g. ∂X_k/∂cubes) to Σ cotangent · ∂cubes/∂R,
        (K, N, 3): the same numbers as a batched autograd backward through `evaluate`, written out. Per pair m of
        centre I and neighbour J (vector v = R_J + S·cell - R_I, weight w = Z_J s(|v|²), separable Gaussians
        g_x g_y g_z), with H = cotangent ⊙ window: ∂/∂v_x = w Σ H g_x' g_y g_z (g' = g (x - v)/σ²) and the same
        for y and z, plus Σ H g_x g_y g_z · ∂w/∂v; then R_J gets +∂/∂v and R_I gets -∂/∂v. For the few atoms of a
        small cell this costs a fraction of autograd's graph bookkeeping (benchmarks/radnet_speed.py).
        """
        index = neighbours.index
        n_atoms = len(neighbours)
        vectors, weights, charge_mask, switch_slope, difference, gauss = self._pair_terms(positions, cell, numbers, neighbours)
        cubes = self._cubes_from_gaussians(gauss, weights).unsqueeze(-4)
        # d g(x_a - v)/dv = g (x_a - v)/σ²
        slope = gauss * difference / self.sigma**2

        def pullback(cotangents: torch.Tensor) -> torch.Tensor:
            h = cotangents.reshape(cotangents.shape[0], n_atoms, self.n, self.n, self.n) * self.window
            gx = torch.stack([gauss[:, :, 0], slope[:, :, 0]], dim=2)  # (N, M, 2, n): g_x and g_x'
            along_x = torch.einsum('kiabc,imsa->kimsbc', h, gx)
            yz = torch.einsum('kimsbc,imb->kimsc', along_x, gauss[:, :, 1])
            value = torch.einsum('kimc,imc->kim', yz[:, :, :, 0], gauss[:, :, 2])
            d_x = torch.einsum('kimc,imc->kim', yz[:, :, :, 1], gauss[:, :, 2])
            d_z = torch.einsum('kimc,imc->kim', yz[:, :, :, 0], slope[:, :, 2])
            d_y = torch.einsum('kimbc,imb,imc->kim', along_x[:, :, :, 0], slope[:, :, 1], gauss[:, :, 2])
            per_vector = (weights.unsqueeze(-1) * torch.stack([d_x, d_y, d_z], dim=-1)
                          + (value * charge_mask * switch_slope).unsqueeze(-1) * 2.0 * vectors)  # (K, N, M, 3)
            grad = -per_vector.sum(dim=2)  # the centre atoms
            return grad.index_add(1, index.reshape(-1).to(self.device), per_vector.flatten(1, 2))

        return cubes, pullback

    def cubes_and_tangents(self, positions, cell, numbers, neighbours: NeighbourList, skip_first: bool = False):
        """Cubes (N, 1, n, n, n) of one configuration (N, 3) Bohr and their derivatives with respect to every
        atomic coordinate, (3N, N, 1, n, n, n) [J·3 + β, I] = ∂cube_I/∂R_Jβ, without autograd (forward mode).
        With `skip_first`, atoms J = 1..N-1 only, (3(N-1), N, 1, n, n, n): the cubes depend on relative positions
        only, so ∂/∂R_0 = -Σ_{J>0} ∂/∂R_J (exactly: the coefficients below sum to 0 over J).

        ∂cube_I/∂R_Jβ = Σ_m (δ(J_m, J) - δ(I, J)) ∂cube_I/∂v_mβ over the pairs m of centre I, and ∂cube_I/∂v_mx =
        W ⊙ (w_m g_x' + ∂w_m/∂v_x g_x) ⊗ g_y ⊗ g_z (the same for y and z): one separable sum per direction. The
        memory is O(N² n³): for small cells, where forward mode beats the pullback of `cubes_and_pullback`.
        """
        index = neighbours.index
        n_atoms, n = len(neighbours), self.n
        vectors, weights, charge_mask, switch_slope, difference, gauss = self._pair_terms(positions, cell, numbers, neighbours)
        cubes = self._cubes_from_gaussians(gauss, weights).unsqueeze(-4)
        weight_slope = (charge_mask * switch_slope).unsqueeze(-1) * 2.0 * vectors  # ∂w/∂v (N, M, 3)
        # factors[β]: the three 1-D factors of ∂cube/∂v_β, the β-th one modified.
        modified = weights[..., None, None] * gauss * difference / self.sigma**2 + weight_slope[..., None] * gauss
        factors = gauss.unsqueeze(0).repeat(3, 1, 1, 1, 1)  # (β, N, M, axis, n)
        for beta in range(3):
            factors[beta, :, :, beta] = modified[:, :, beta]
        # (δ(J_m, J) - δ(I, J)) for every centre I, pair m and atom J.
        coefficient = torch.nn.functional.one_hot(index.to(self.device), n_atoms).to(self.dtype)  # (N, M, J)
        coefficient = coefficient - torch.eye(n_atoms, dtype=self.dtype, device=self.device)[:, None, :]
        if skip_first:
            coefficient = coefficient[:, :, 1:]
        n_moved = coefficient.shape[-1]
        plane = (factors[..., 0, :, None] * factors[..., 1, None, :]).flatten(-2)  # (β, N, M, n²)
        weighted = coefficient.transpose(1, 2)[None, :, :, :, None] * plane[:, :, None]  # (β, N, J, M, n²)
        tangents = weighted.transpose(-1, -2) @ factors[:, :, None, :, 2]  # (β, N, J, n², n)
        tangents = tangents.reshape(3, n_atoms, n_moved, n, n, n) * self.window
        return cubes, tangents.permute(2, 0, 1, 3, 4, 5).reshape(3 * n_moved, n_atoms, 1, n, n, n)

    # ------------------------------------------------------------------ internals
    def _tensor(self, value) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(dtype=self.dtype, device=self.device)
        return torch.as_tensor(np.asarray(value, dtype=float), dtype=self.dtype, device=self.device)

    def _switch(self, vectors: torch.Tensor) -> torch.Tensor:
        """C² switch of the squared pair distance: 1 inside cutoff - switch_width, 0 at and beyond the cutoff.

        Written in d² so the self pair (d = 0) has a finite derivative.
        """
        inner = max(self.cutoff - self.switch_width, 0.0)
        d2 = (vectors * vectors).sum(-1)
        t = ((d2 - inner**2) / (self.cutoff**2 - inner**2)).clamp(0.0, 1.0)
        return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)

    def _pair_terms(self, positions, cell, numbers, neighbours: NeighbourList):
        """What the written-out derivatives share, per centre atom I and pair m (N, M): the pair vectors v (N, M, 3),
        weights w = Z_J s(|v|²), Z_J·mask, ds/d|v|², x_a - v (N, M, 3, n) and the 1-D Gaussians g (N, M, 3, n)."""
        positions = self._tensor(positions)
        cell = self._tensor(cell)
        charges = self._tensor(numbers)
        index, shift, mask = neighbours.index, neighbours.shift, neighbours.mask.to(self.dtype)
        vectors = positions[index] + shift.to(self.dtype) @ cell - positions[:, None, :]
        switch, switch_slope = self._switch_and_slope(vectors)
        charge_mask = charges[index] * mask
        difference = self.offsets - vectors.unsqueeze(-1)
        gauss = self._gaussians(difference, in_place=False)
        return vectors, charge_mask * switch, charge_mask, switch_slope, difference, gauss

    def _switch_and_slope(self, vectors: torch.Tensor):
        """`_switch` and its derivative with respect to the squared distance d², without autograd."""
        inner = max(self.cutoff - self.switch_width, 0.0)
        span = self.cutoff**2 - inner**2
        t = (((vectors * vectors).sum(-1) - inner**2) / span).clamp(0.0, 1.0)
        switch = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
        return switch, -30.0 * t**2 * (1.0 - t) ** 2 / span  # 0 at both ends of the clamp, so exact there too

    def _cubes(self, vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_m w_m g(x_a - v_mx) g(x_b - v_my) g(x_c - v_mz) · W_abc, via separable 1-D Gaussians."""
        difference = self.offsets[:, None] - vectors.transpose(-1, -2).contiguous().unsqueeze(-2)  # (..., 3, n, M)
        gauss = self._gaussians(difference, in_place=not difference.requires_grad)
        return self._sum_over_pairs(gauss[..., 0, :, :], gauss[..., 1, :, :], gauss[..., 2, :, :], weights)

    def _gaussians(self, difference: torch.Tensor, in_place: bool) -> torch.Tensor:
        """g = exp(-difference² / 2σ²), `in_place` in `difference` (the largest tensor of a batch of cubes)."""
        scale = -0.5 / self.sigma**2
        if in_place:
            return difference.square_().mul_(scale).exp_()
        return torch.exp(difference.square().mul(scale))

    def _cubes_from_gaussians(self, gauss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """`_cubes` from the 1-D Gaussians (..., M, 3, n) of `_pair_terms`."""
        gauss = gauss.movedim(-3, -1).contiguous()  # (..., 3, n, M), laid out as in `_cubes`: the same numbers
        return self._sum_over_pairs(gauss[..., 0, :, :], gauss[..., 1, :, :], gauss[..., 2, :, :], weights)

    def _sum_over_pairs(self, gx, gy, gz, weights) -> torch.Tensor:
        """W ⊙ Σ_m w_m gx_m ⊗ gy_m ⊗ gz_m from the 1-D Gaussians (..., n, M) and weights (..., M): one batched
        matrix product per cube, (n, M) @ (M, n²), the pairs the inner dimension (3-4x faster than
        (n², M) @ (M, n) on CPU for n = 9)."""
        n = self.n
        plane = (gy.unsqueeze(-2) * gz.unsqueeze(-3)).flatten(-3, -2)  # (..., n², M): [b·n + c, m]
        cube = (gx * weights.unsqueeze(-2)) @ plane.transpose(-1, -2)  # (..., n, n²)
        return cube.reshape(cube.shape[:-2] + (n, n, n)) * self.window

def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)
