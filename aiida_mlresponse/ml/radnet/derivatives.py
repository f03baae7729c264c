"""Derivatives of atom-decomposed predictions with respect to atomic positions, by automatic differentiation.

A prediction X(τ) = offset + scale · Σ_I f(cube_I(τ)) (``AtomSumModel``) is differentiable through the density
cubes of `density.py`. From it:

- Born effective charges Z*_κ,αβ = Ω ∂P_α/∂τ_κβ (P in e/Bohr², Ω in Bohr³, Z* in e),
- ∂χ_αβ/∂τ_κγ with χ = (ε∞ - 1)/4π (Bohr⁻¹),
- directional derivatives Σ_κγ ∂χ_αβ/∂τ_κγ u_κγ along given displacement patterns u (Raman modes).

Full Jacobians use reverse mode: one forward pass and one vector-Jacobian product through the network per
output component (3 for P, 6 for ε∞), then a single batched VJP through the density cubes, so the cost is
O(N_atoms) for all 3N derivatives. Networks that share the cubes (P and ε∞) can be concatenated into one
AtomSumModel so the cubes are built and differentiated once for both. Directional derivatives use
forward mode (one JVP per pattern, batched with torch.func.vmap); on CPU one JVP through the network costs about
as much as one VJP, so with fewer patterns than ε∞ components (e.g. the three optical Γ modes of zincblende)
this is the cheaper route to Raman tensors (benchmarks/radnet_scale.py measures both).
Large cells are processed in chunks of centre atoms (``chunk_size``) so memory stays bounded: the sum over
atoms is linear, so the derivative of X is the sum of the chunks' derivatives.

Acoustic sum rule: the cubes depend only on relative positions, so Σ_κ ∂X/∂τ_κ = 0 holds by construction up
to rounding; ``acoustic_sum_rule=True`` also subtracts the mean over atoms (Gonze & Lee 1997), which is the
prescription for DFT charges and a no-op here beyond rounding.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ...physics.born import impose_acoustic_sum_rule
from ..common import voigt_to_tensor
from .density import AtomCubes, NeighbourList

__all__ = [
    'AtomSumModel', 'jacobian', 'directional_derivatives', 'born_charges', 'chi_derivatives',
    'chi_directional_derivatives',
]


class AtomSumModel:
    """X(positions) = offset + scale · Σ_I model(cube_I) for one cell and one neighbour list.

    model: torch module mapping cubes (C, 1, n, n, n) to per-atom contributions (C, K), in the dtype of
        ``atom_cubes``. scale, offset: (K,) undo the per-component output normalization.
    cell (3, 3), numbers (N,), reference_positions (N, 3): Bohr. The neighbour list is built once at the
        reference positions with cutoff + skin, so evaluations are pure torch (usable by autograd, forward
        mode and torch.func) and exact for any positions within skin/2 of the reference.
    chunk_size: centre atoms per chunk in ``partial`` sums (None: all at once).
    """

    def __init__(self, model: Callable, atom_cubes: AtomCubes, cell, numbers, reference_positions,
                 scale=1.0, offset=0.0, skin: float = 0.5, chunk_size: int | None = None):
        self.model = model
        self.atom_cubes = atom_cubes
        self.cell = atom_cubes._tensor(cell)
        self.numbers = atom_cubes._tensor(numbers)
        self.neighbours: NeighbourList = atom_cubes.neighbours(reference_positions, cell, skin=skin)
        self.scale = atom_cubes._tensor(scale)
        self.offset = atom_cubes._tensor(offset)
        self.n_atoms = len(self.neighbours)
        self.chunk_size = chunk_size or self.n_atoms

    @property
    def volume(self) -> float:
        return abs(float(torch.linalg.det(self.cell.double())))

    def chunks(self) -> list[torch.Tensor]:
        return list(torch.arange(self.n_atoms).split(self.chunk_size))

    def cubes(self, positions: torch.Tensor, centres=None) -> torch.Tensor:
        """Density cubes (C, 1, n, n, n) of the centre atoms (all by default), differentiable in positions."""
        return self.atom_cubes.evaluate(positions, self.cell, self.numbers, self.neighbours, centres=centres)

    def head(self, cubes: torch.Tensor) -> torch.Tensor:
        """scale · Σ_I model(cube_I) over the given cubes: (K,)."""
        return self.scale * self.model(cubes).sum(0)

    def partial(self, positions: torch.Tensor, centres) -> torch.Tensor:
        """scale · Σ_{I in centres} model(cube_I): (K,). Without the offset; sums over chunks give X - offset."""
        return self.head(self.cubes(positions, centres))

    def __call__(self, positions) -> torch.Tensor:
        """The prediction X (K,) at positions (N, 3) Bohr."""
        positions = self.atom_cubes._tensor(positions)
        return self.offset + sum(self.partial(positions, centres) for centres in self.chunks())


def _chunked(function) -> tuple[Callable, list]:
    """(partial sum function, chunks) for an AtomSumModel; the whole function as one chunk otherwise."""
    if isinstance(function, AtomSumModel):
        return function.partial, function.chunks()
    return (lambda positions, _: function(positions)), [None]


def _positions(function, positions) -> torch.Tensor:
    if isinstance(function, AtomSumModel):
        return function.atom_cubes._tensor(positions).detach()
    return torch.as_tensor(positions).detach()


def jacobian(function, positions, batched: bool = False) -> torch.Tensor:
    """∂X_k/∂τ_κβ as (K, N, 3) by reverse mode: one VJP per output component (per chunk of atoms).

    function: an AtomSumModel, or any callable positions (N, 3) -> (K,) built from torch operations.
    For an AtomSumModel the K vector-Jacobian products run through the network only (giving ∂X_k/∂cube),
    and the chain through the density is one batched VJP, so the cubes are built and differentiated once.
    batched: vmap the K network VJPs (``is_grads_batched``); measured slower than a loop on CPU.
    """
    x = _positions(function, positions).requires_grad_(True)
    if not isinstance(function, AtomSumModel):
        return _vjps(function(x).reshape(-1), x, batched).detach()
    total = None
    for centres in function.chunks():
        cubes = function.cubes(x, centres)
        leaf = cubes.detach().requires_grad_(True)
        cotangents = _vjps(function.head(leaf), leaf, batched)  # (K, C, 1, n, n, n)
        (grads,) = torch.autograd.grad(cubes, x, cotangents, is_grads_batched=True)
        total = grads if total is None else total + grads
    return total.detach()


def _vjps(value: torch.Tensor, inputs: torch.Tensor, batched: bool) -> torch.Tensor:
    """Rows of the Jacobian of value (K,) with respect to inputs, stacked: (K, *inputs.shape)."""
    eye = torch.eye(len(value), dtype=value.dtype, device=value.device)
    if batched:
        return torch.autograd.grad(value, inputs, eye, is_grads_batched=True)[0]
    last = len(value) - 1
    return torch.stack([torch.autograd.grad(value, inputs, row, retain_graph=k < last)[0] for k, row in enumerate(eye)])


def directional_derivatives(function, positions, directions) -> torch.Tensor:
    """Σ_κβ ∂X_k/∂τ_κβ u^m_κβ as (M, K) by forward mode: one JVP per pattern u^m, directions (M, N, 3)."""
    from torch.func import jvp, vmap

    partial, chunks = _chunked(function)
    x = _positions(function, positions)
    tangents = torch.as_tensor(directions, dtype=x.dtype, device=x.device)
    total = 0
    for centres in chunks:
        def pushforward(tangent, centres=centres):
            return jvp(lambda p: partial(p, centres).reshape(-1), (x,), (tangent,))[1]
        total = total + vmap(pushforward)(tangents)
    return total.detach()


def born_charges(polarization, positions, volume: float | None = None, acoustic_sum_rule: bool = True,
                 batched: bool = False) -> np.ndarray:
    """Z*_κ,αβ = Ω ∂P_α/∂τ_κβ as (N, 3, 3) [κ, α, β], in e.

    polarization: AtomSumModel (or callable) giving P (3,) in e/Bohr² from positions (N, 3) in Bohr.
    volume: Ω in Bohr³ (taken from the AtomSumModel's cell when omitted).
    """
    if volume is None:
        volume = polarization.volume
    dp = jacobian(polarization, positions, batched=batched).cpu().double().numpy()  # (3, N, 3) [α, κ, β]
    charges = volume * dp.transpose(1, 0, 2)
    return impose_acoustic_sum_rule(charges) if acoustic_sum_rule else charges


def chi_derivatives(dielectric, positions, acoustic_sum_rule: bool = True, batched: bool = False) -> np.ndarray:
    """∂χ_αβ/∂τ_κγ as (N, 3, 3, 3) [κ, γ, α, β] in Bohr⁻¹, with χ = (ε∞ - 1)/4π.

    dielectric: AtomSumModel (or callable) giving the six ε∞ components (Voigt
    order xx, yy, zz, yz, xz, xy, `ml.common.VOIGT_PAIRS`) from positions (N, 3) in Bohr.
    """
    de = jacobian(dielectric, positions, batched=batched).cpu().double().numpy()  # (K, N, 3)
    dchi = voigt_to_tensor(np.moveaxis(de, 0, -1)) / (4.0 * math.pi)
    return impose_acoustic_sum_rule(dchi) if acoustic_sum_rule else dchi


def chi_directional_derivatives(dielectric, positions, directions) -> np.ndarray:
    """Σ_κγ ∂χ_αβ/∂τ_κγ u^m_κγ as (M, 3, 3) for displacement patterns u (M, N, 3) in Bohr (forward mode).

    With u^m_κγ = e^m_κγ / √M_κ this is the Raman tensor of mode m divided by √Ω (physics.raman).
    """
    de = directional_derivatives(dielectric, positions, directions).cpu().double().numpy()  # (M, K)
    return voigt_to_tensor(de) / (4.0 * math.pi)
