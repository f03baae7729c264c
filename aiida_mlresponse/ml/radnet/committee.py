"""A committee of K radnet models (kind 'radnet_committee'): mean and spread of their predictions.

`Committee` holds the members (each a `network.RadNet` with its own frozen heads and CNN) and, when the
members have heads, the committee's own `CentralHeads`; the recipe that fits them is `fit.fit_committee`.
`NeighbourCache` keeps neighbour lists for displaced copies of one cell; `predict_pool` scores many configurations of
one cell with several committees (an active-learning pool) on one pass of density cubes.

The committee is one `torch.nn.Module` whose state is tensors and whose ``hyperparameters`` are JSON-able,
saved with `ml.checkpoint.save`.
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..common import torch_threads
from .density import AtomCubes
from .heads import CubePolynomial, TaylorHead, evaluate_heads
from .network import RadNet, complete_hyperparameters, stack_members, stacked_correction_and_jvp
from .taylor import TaylorBaseline

KIND = 'radnet_committee'

DEFAULT_DENSITY = {'n': 9, 'spacing': 0.875, 'sigma': 1.0, 'window_radius': 3.5, 'window_width': 0.5}


def atom_cubes_from(density: dict, dtype=torch.float32) -> AtomCubes:
    """The `density.AtomCubes` described by a committee's ``density`` hyperparameters (Bohr)."""
    return AtomCubes(dtype=dtype, **density)


class CentralHeads(nn.Module):
    """The committee's own frozen heads (Taylor polynomial and/or cube polynomial), fitted on ALL its training data.

    Same shapes as a member's heads (``member`` hyperparameters); value P(cubes) + T(positions), float64.
    ``correction_weight`` (n_outputs,) in [0, 1] weights the members' mean CNN correction in the committee mean:
    its least-squares weight against the out-of-fold residuals of these heads, on the configurations each member
    held out (`fit.train_committee`), kept only where it lowers their absolute residual significantly (`gated_weight`),
    so CNNs that do not clearly help on unseen configurations leave the mean at the heads.
    """

    def __init__(self, member_hyperparameters: dict):
        super().__init__()
        hp = member_hyperparameters
        self.n_outputs = hp['n_outputs']
        taylor, polynomial = hp['taylor'], hp['polynomial']
        self.taylor = TaylorHead(taylor['degree'], taylor['n_atoms'], hp['n_outputs']) if taylor else None
        self.polynomial = CubePolynomial(polynomial['components'], hp['cube_size'], hp['n_outputs']) if polynomial else None
        self.register_buffer('correction_weight', torch.ones(hp['n_outputs'], dtype=torch.float64))

    def forward(self, cubes: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return evaluate_heads(self.taylor, self.polynomial, cubes, positions, self.n_outputs)

    def set_from(self, baseline: TaylorBaseline | None, polynomial: CubePolynomial | None) -> 'CentralHeads':
        """Copy heads fitted by `heads.fit_heads`."""
        if (baseline is None) != (self.taylor is None) or (polynomial is None) != (self.polynomial is None):
            raise ValueError('the fitted heads do not match the committee heads (Taylor, cube polynomial)')
        if baseline is not None:
            self.taylor.set_from(baseline)
        if polynomial is not None:
            self.polynomial.load_state_dict(polynomial.state_dict())
        return self


class Committee(nn.Module):
    """K RadNet members; ``forward`` gives the members' predictions (K, B, n_outputs), ``predict`` the committee
    mean and the spread.

    Mean and spread (a bagged estimator). Each member fits its closed-form heads on its own resample of the
    training data and its CNN on what they leave, so the members scatter as the fit would over data sets: their
    standard deviation is the spread. The members' heads are each fitted on less data (or on a resample) than the
    committee was given, so their average is a slightly worse head than one fitted on all of it; with
    ``hyperparameters['central'] = True`` (what `fit.train_committee` makes whenever members have heads) the
    committee holds such ``central`` heads, fitted on all its training data, and its mean is
    ``central(cubes, positions) + W · mean_k w_k · correction_k(cubes)``: the best head plus the members' mean CNN
    correction, weighted by W = ``central.correction_weight`` (fitted out of bag, see `CentralHeads`). Without it (no heads, or checkpoints written before ``central`` existed, which load unchanged) the
    mean is the members' mean.
    """

    kind = KIND

    def __init__(self, hyperparameters: dict):
        super().__init__()
        hp = copy.deepcopy(hyperparameters)
        hp['member'] = complete_hyperparameters(hp['member'])
        hp.setdefault('density', dict(DEFAULT_DENSITY))
        hp.setdefault('target', None)
        hp.setdefault('central', False)  # checkpoints from before the central heads: the members' mean
        if hp['density']['n'] != hp['member']['cube_size']:
            raise ValueError('the density cube size and the network cube_size differ')
        if hp['central'] and not (hp['member']['taylor'] or hp['member']['polynomial']):
            raise ValueError('central heads need members with a Taylor or a cube-polynomial head')
        self.hyperparameters = hp
        self.members = nn.ModuleList(RadNet(hp['member']) for _ in range(hp['n_members']))
        self.central = CentralHeads(hp['member']) if hp['central'] else None

    def __len__(self):
        return len(self.members)

    def atom_cubes(self, dtype=None) -> AtomCubes:
        dtype = dtype or self.members[0].dtype
        if not hasattr(self, '_atom_cubes'):
            self._atom_cubes = {}
        if dtype not in self._atom_cubes:  # made once: the window and offsets are the same for every call
            self._atom_cubes[dtype] = atom_cubes_from(self.hyperparameters['density'], dtype)
        return self._atom_cubes[dtype]

    def forward(self, cubes: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The members' predictions (K, B, n_outputs) float64."""
        return self.mean_and_members(cubes, positions)[1]

    def mean_and_members(self, cubes: torch.Tensor, positions: torch.Tensor | None = None, features=None):
        """(committee mean (B, n_outputs), members' predictions (K, B, n_outputs)), float64, differentiable.

        Two shortcuts that change no number: members whose CNN weights are all 0 (committees fitted without CNN)
        skip their CNNs, and cube polynomials that share one projection (`fit.train_committee`'s
        ``shared_projection``) project the cubes once; `features`: that projection's features of `cubes`
        (`shared_polynomial`), when the caller has them already (`predict_pool`: another committee's).
        """
        central, heads = self._head_values(cubes, positions, features)
        if self.cnn_off():
            corrections, members = None, heads
        else:
            corrections = torch.stack([member.residual_weight * member.correction(cubes) for member in self.members])
            members = corrections + heads
        if self.central is None:
            return members.mean(dim=0), members
        mean = central
        if corrections is None:
            return mean, members
        return mean + self.central.correction_weight * corrections.mean(dim=0), members

    def cnn_off(self) -> bool:
        """True when every member's CNN weight is 0: the CNNs add exactly nothing and are not evaluated."""
        return not any(bool(member.residual_weight.any()) for member in self.members)

    def shared_polynomial(self) -> CubePolynomial | None:
        """The cube polynomial whose `CubePolynomial.features` serve all the committee's cube polynomials, when they
        share one projection (else None)."""
        polynomials = [m.polynomial for m in [self.central, *self.members] if m is not None and m.polynomial is not None]
        if not polynomials:
            return None
        shared = self._cached('shared_projection', polynomials,
                              lambda: all(same_projection(p, polynomials[0]) for p in polynomials))
        return polynomials[0] if shared else None

    def _head_values(self, cubes, positions, features=None):
        """(the central heads' value (B, n_outputs) or None, the members' heads (K, B, n_outputs)): P(cubes) + T(positions)
        as `heads.evaluate_heads`, the Taylor heads in one stacked evaluation, the polynomial features once if shared."""
        models = ([self.central] if self.central is not None else []) + list(self.members)
        if features is None and self.shared_polynomial() is not None:
            features = self.shared_polynomial().features(cubes)
        taylors = None
        if self.members[0].taylor is not None:
            if positions is None:
                raise ValueError('this model has a Taylor head: pass the positions too')
            heads = [model.taylor for model in models]
            taylors = TaylorHead.stacked(heads, positions, self._stacked_taylors(heads))
        polynomials = None
        if features is not None and all(model.polynomial is not None for model in models):
            # every head on the shared features in one matrix product: (B, F) @ (F, heads · n_outputs)
            coefficients, intercepts = self._cached('polynomials', [model.polynomial for model in models], lambda: (
                torch.cat([model.polynomial.coefficients for model in models], dim=1),
                torch.cat([model.polynomial.intercept for model in models])))
            polynomials = (features @ coefficients + intercepts).reshape(len(features), len(models), -1).transpose(0, 1)
        values = []
        for k, model in enumerate(models):
            value = None
            if polynomials is not None:
                value = polynomials[k]
            elif model.polynomial is not None:
                value = (model.polynomial(cubes) if features is None
                         else features @ model.polynomial.coefficients + model.polynomial.intercept)
            if taylors is not None:
                value = taylors[k] if value is None else value + taylors[k]
            if value is None:
                value = torch.zeros(len(positions if cubes is None else cubes), model.n_outputs, dtype=torch.float64)
            values.append(value)
        members = torch.stack(values[len(models) - len(self.members):])
        return (values[0] if self.central is not None else None), members

    def predict(self, cubes, positions=None, features=None):
        """(mean, spread): the committee mean and the members' standard deviation (ddof 1), (B, n_outputs) float64;
        `features` as in `mean_and_members`."""
        mean, values = self.mean_and_members(cubes, positions, features)
        spread = values.std(dim=0) if len(self.members) > 1 else torch.zeros_like(values[0])
        return mean, spread

    def values_and_jacobians(self, cubes: torch.Tensor, positions: torch.Tensor, tangents: torch.Tensor | None = None):
        """For one structure, without autograd: the committee mean (n_outputs,), the members' predictions
        (K, n_outputs), the derivative of the mean with respect to the cubes (n_outputs, N, 1, n, n, n) and its
        direct derivative with respect to the positions (N, 3) Bohr through the Taylor heads (n_outputs, N, 3; None
        without Taylor heads), float64. The full ∂mean/∂positions is the third chained through the density
        (`density.AtomCubes.cubes_and_pullback`) plus the fourth (`predict.predict_structure`).

        With `tangents`, the derivatives of the cubes with respect to the positions (3N, N, 1, n, n, n), or to those
        of atoms 1..N-1 only (3(N-1), N, 1, n, n, n; atom 0 then gets minus their sum, translation invariance)
        (`density.AtomCubes.cubes_and_tangents`), the networks run in forward mode instead (cheaper for a cell of
        a few atoms): the third output is None and the fourth the whole ∂mean/∂positions (n_outputs, N, 3).

        Each part is written out: the CNNs' input Jacobians or directional derivatives
        (`RadNet.weighted_correction_and_cube_jacobian`, `RadNet.weighted_correction_and_jvp`), the cube
        polynomial's and the Taylor polynomial's (`CubePolynomial.value_and_cube_jacobian`,
        `TaylorHead.stacked_with_gradient`); tests compare them with autograd.
        """
        forward_mode = tangents is not None
        n_atoms = positions.shape[0]
        with torch.no_grad():
            if forward_mode:
                # All members at once: (K, n_outputs), (K, 3N, n_outputs).
                corrections, grads = stacked_correction_and_jvp(list(self.members), cubes, tangents,
                                                                self._stacked_members())
                grad_sum = grads.sum(dim=0)
            else:
                corrections, grad_sum = [], 0
                network_cubes = cubes.to(self.members[0].dtype)  # converted once for all members
                for member in self.members:
                    value, grad = member.weighted_correction_and_cube_jacobian(network_cubes)
                    corrections.append(value)
                    grad_sum = grad_sum + grad
                corrections = torch.stack(corrections)  # (K, n_outputs)
            mean = corrections.mean(dim=0)
            if forward_mode:
                grad = self._per_atom(grad_sum.T / len(self.members), n_atoms)  # (n_outputs, N, 3)
            else:
                grad = grad_sum / len(self.members)  # (n_outputs, N, 1, n, n, n)
            if self.central is not None:
                weight = self.central.correction_weight
                mean = weight * mean
                grad = weight.reshape((-1,) + (1,) * (grad.dim() - 1)) * grad
            values = corrections
            cube_grad, position_grad = (None, grad) if forward_mode else (grad, None)
            first = self.members[0]
            if first.polynomial is not None:
                members = [member.polynomial.value_and_cube_jacobian(cubes) for member in self.members]
                values = values + torch.stack([value for value, _ in members])
                if self.central is None:  # the mean's heads: every member's, weight 1/K
                    value = sum(value for value, _ in members) / len(members)
                    polynomial_grad = sum(grad for _, grad in members) / len(members)
                else:
                    value, polynomial_grad = self.central.polynomial.value_and_cube_jacobian(cubes)
                mean = mean + value
                if forward_mode:
                    position_grad = position_grad + self._per_atom(polynomial_grad.flatten(1) @ tangents.flatten(1).T,
                                                                   n_atoms)
                else:
                    cube_grad = cube_grad + polynomial_grad
            if first.taylor is not None:
                # One stacked evaluation of the central head (if any) and the members'.
                taylors = [self.central.taylor] if self.central is not None else []
                taylors += [member.taylor for member in self.members]
                taylor, gradient = TaylorHead.stacked_with_gradient(taylors, positions, self._stacked_taylors(taylors))
                member_taylors = taylor[len(taylors) - len(self.members):]
                values = values + member_taylors
                if self.central is not None:
                    mean, gradient = mean + taylor[0], gradient[0]
                else:
                    mean, gradient = mean + member_taylors.mean(dim=0), gradient.mean(dim=0)
                position_grad = gradient if position_grad is None else position_grad + gradient
        return mean, values, cube_grad, position_grad

    def _stacked_members(self) -> dict:
        """`network.stack_members` of the members, remade when any of their tensors changed (training, loading)."""
        return self._cached('members', list(self.members), lambda: stack_members(list(self.members)))

    def _stacked_taylors(self, taylors: list) -> dict:
        """`heads.TaylorHead.stack` of the given heads, remade when any of their buffers changed."""
        return self._cached('taylors', taylors, lambda: TaylorHead.stack(taylors))

    def _cached(self, name: str, modules: list, build: Callable):
        """build(), kept until a tensor of `modules` is replaced or changed in place (its version counter moves).
        The key reads the modules' own parameter and buffer dicts, so it costs microseconds, not a module walk."""
        cache = self.__dict__.setdefault('_tensor_cache', {})
        entry = cache.get(name)
        if entry is None or entry[0] != [id(m) for m in modules]:
            slots = [(module.__dict__[kind], key) for top in modules for module in top.modules()
                     for kind in ('_parameters', '_buffers') for key, value in module.__dict__[kind].items()
                     if value is not None]
            entry = cache[name] = [[id(m) for m in modules], slots, None, None]
        slots = entry[1]
        key = [(id(table[key]), table[key]._version) for table, key in slots]
        if entry[2] != key:
            entry[2], entry[3] = key, build()
        return entry[3]

    @staticmethod
    def _per_atom(directional: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """(n_outputs, 3N) or (n_outputs, 3(N-1)) derivatives along the atoms' coordinates -> (n_outputs, N, 3),
        atom 0 from translation invariance in the second case."""
        grad = directional.reshape(directional.shape[0], -1, 3)
        if grad.shape[1] == n_atoms - 1:
            grad = torch.cat([-grad.sum(dim=1, keepdim=True), grad], dim=1)
        return grad

    def predict_positions(self, positions, cell, numbers, batch_size: int = 128):
        """Mean and spread (numpy) for configurations (B, N, 3) Bohr of one cell: cubes made here (`predict_pool`)."""
        return predict_pool([self], positions, cell, numbers, batch_size)[0]

    def position_function(self, cell, numbers, reference_positions, member: int | None = None,
                          skin: float = 0.5) -> Callable:
        """positions (N, 3) Bohr -> committee mean (or one member's) prediction (n_outputs,), pure torch.

        For `derivatives.jacobian` / `born_charges` / `chi_derivatives`: the neighbour list is built once at
        the reference positions (valid within skin/2 of them) and the heads are included.
        """
        atom_cubes = self.atom_cubes(torch.float64)
        neighbours = atom_cubes.neighbours(reference_positions, cell, skin=skin)

        def function(positions):
            positions = torch.as_tensor(positions, dtype=torch.float64)
            cubes = atom_cubes.evaluate(positions, cell, numbers, neighbours).unsqueeze(0)
            if member is not None:
                return self.members[member](cubes, positions.unsqueeze(0))[0]
            return self.mean_and_members(cubes, positions.unsqueeze(0))[0][0]

        return function


def same_projection(first: CubePolynomial, second: CubePolynomial) -> bool:
    """Whether two cube polynomials have the same features (standardization and projection)."""
    return (torch.equal(first.input_mean, second.input_mean) and torch.equal(first.input_scale, second.input_scale)
            and torch.equal(first.projection, second.projection))


class NeighbourCache:
    """Neighbour lists reused while the atoms stay within skin/2 of where the list was built (a Verlet list).

    A list built with cutoff + skin holds every pair that is within the cutoff as long as no atom has moved more
    than skin/2 from the positions it was built at; the pairs it holds beyond the cutoff have weight exactly 0
    (the density's switch), so reusing it changes no cube. Building a list costs milliseconds of numpy for a
    small periodic cell (many images), as much as a whole prediction: an active-learning loop or a Raman
    workflow that evaluates displaced copies of one cell builds it once. One cache can serve several
    committees (P and ε∞) with the same density cutoff.
    """

    def __init__(self, skin: float = 0.5, size: int = 8):
        self.skin, self.size = float(skin), int(size)
        self._entries = {}  # (cutoff, cell bytes, number of atoms) -> (positions built at, NeighbourList)

    def get(self, atom_cubes: AtomCubes, positions, cell):
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        cell = np.asarray(cell, dtype=float)
        key = (atom_cubes.cutoff, cell.tobytes(), len(positions))
        entry = self._entries.get(key)
        if entry is not None and np.linalg.norm(positions - entry[0], axis=-1).max() <= self.skin / 2:
            return entry[1]
        neighbours = atom_cubes.neighbours(positions, cell, skin=self.skin)
        if len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (positions.copy(), neighbours)
        return neighbours


#: One neighbour list serves a whole pool (`predict_pool`) when no atom is further than POOL_SKIN / 2 Bohr from its
#: mean position over the pool: displaced copies of one cell (a σ = 0.03 Å pool of 10,000 BN cells reaches 0.3 Bohr).
POOL_SKIN = 1.0
#: Pool cubes leave out pairs that add less than this (per unit charge) to any voxel (`AtomCubes.negligible_beyond`):
#: below the float32 rounding of the cubes, and 0.58 of the default cutoff's pairs for the default cube.
POOL_TOLERANCE = 1e-9


def pool_workers() -> int:
    """Threads that score a pool's batches side by side: the CPUs this process may use, at most 4 (each batch runs
    on one torch thread; torch releases the GIL inside its kernels)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))


def predict_pool(committees: list, positions, cell, numbers, batch_size: int = 128, workers: int | None = None) -> list:
    """[(mean, spread)] (numpy, as `Committee.predict`) of each committee for configurations (B, N, 3) Bohr of one
    cell, the density cubes made once for all the committees that share their density and dtype (P and ε∞).

    The cubes of `batch_size` configurations at a time (`AtomCubes.batch`), from one neighbour list for the whole
    pool when its atoms stay within POOL_SKIN / 2 of their mean positions (else one list per batch), without the
    pairs below POOL_TOLERANCE; committees whose heads need no cubes (Taylor heads only, CNNs off) get none. The
    batches run on `workers` threads (default `pool_workers()`) of one torch thread each: batches are
    independent, so the numbers do not depend on the count (beyond the rounding of BLAS's own threads).
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
    out = [None] * len(committees)
    groups = {}
    for k, committee in enumerate(committees):
        key = (repr(sorted(committee.hyperparameters['density'].items())), committee.members[0].dtype)
        groups.setdefault(key, []).append(k)
    for indices in groups.values():
        group = [committees[k] for k in indices]
        atom_cubes = group[0].atom_cubes()
        needs_cubes = any(not c.cnn_off() or c.members[0].polynomial is not None for c in group)
        neighbours = None
        if needs_cubes and len(positions):
            mean = positions.mean(axis=0)
            displacement = np.linalg.norm(positions - mean, axis=-1).max()
            if 2.0 * displacement <= POOL_SKIN:
                neighbours = atom_cubes.neighbours(mean, cell, skin=2.0 * displacement, tolerance=POOL_TOLERANCE)
        # Committees fitted on the same configurations (P and ε∞) project the cubes on the same principal directions.
        projections, uses = [], []
        for committee in group:
            polynomial = committee.shared_polynomial()
            same = [k for k, other in enumerate(projections) if polynomial is not None and same_projection(polynomial, other)]
            if polynomial is not None and not same:
                projections.append(polynomial)
            uses.append(None if polynomial is None else (same or [len(projections) - 1])[0])

        def score(chunk):
            with torch.no_grad():
                batch_neighbours = neighbours
                if needs_cubes and batch_neighbours is None:
                    batch_neighbours = atom_cubes.neighbours(chunk, cell, tolerance=POOL_TOLERANCE)
                cubes = atom_cubes.batch(chunk, cell, numbers, batch_neighbours) if needs_cubes else None
                features = [polynomial.features(cubes) for polynomial in projections]
                return [[array.numpy() for array in committee.predict(
                    cubes, torch.as_tensor(chunk), None if use is None else features[use])]
                    for committee, use in zip(group, uses)]

        chunks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]
        # without cubes (Taylor heads only) a batch is too little work for a thread to pay off
        count = min(workers or pool_workers(), len(chunks) - 1) if needs_cubes else 1
        # The first batch alone: it fills the committees' tensor caches (`_cached`) that the threads then only read.
        scored = [score(chunk) for chunk in chunks[:1]]
        if count > 1:
            with torch_threads(1), concurrent.futures.ThreadPoolExecutor(count) as pool:
                scored += list(pool.map(score, chunks[1:]))
        else:
            scored += [score(chunk) for chunk in chunks[1:]]
        for position, k in enumerate(indices):
            value = [batch[position] for batch in scored]
            out[k] = tuple(np.concatenate(arrays) for arrays in zip(*value)) if value else (
                np.zeros((0, committees[k].members[0].n_outputs)),) * 2
    return out


def build(hyperparameters: dict) -> Committee:
    """Builder of kind 'radnet_committee' (`ml.registry`)."""
    return Committee(hyperparameters)

