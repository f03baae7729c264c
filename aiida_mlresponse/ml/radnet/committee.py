"""A committee of K radnet models: different seeds and resamples; mean and spread of predictions.

`fit_committee` is the one high-level fit (used by the training entry point and benchmarks/radnet_accuracy.py):
positions, cell, numbers and targets in, a trained `Committee` and one `training.TrainingResult` per member
out; every choice is in its JSON-able ``hyperparameters`` (``DEFAULT_FIT_HYPERPARAMETERS``, documented there),
stored in ``committee.hyperparameters['fit']`` so the checkpoint records them.

How a committee is fitted (default hyperparameters):
1. Head choice (`select_heads`, on a held-out quarter of the training data): the ridge Taylor polynomial of
   `baselines.py` (ridge on its nonlinear terms only), or the cube polynomial (`radnet.CubePolynomial`: a sum
   over atoms of a quadratic in the leading principal components of each atom's cube) alone or jointly with the
   linear Taylor terms; the lowest held-out MAE wins. With no CNN correction a member *is* that head.
2. Members: member k draws its own split (``resampling='split'``: a random (1 - holdout) part to train on, the
   rest to validate on; or ``'bootstrap'`` with out-of-bag validation) and fits the chosen heads on its training
   part, frozen (`fit_heads`, closed form).
3. Its CNN learns the out-of-fold residuals of the heads on its training part (K-fold: a high-degree head nearly
   interpolates its own training data, so in-sample residuals would teach the CNN nothing), starting from a
   zero output, with early stopping on the true residuals of its validation part.
4. Shrinkage: the CNN correction c is weighted per component by w in [0, 1], the least-squares weight of c
   against the residual on the member's validation part: a CNN that does not help on configurations it never
   trained on gets w ≈ 0 and the member falls back to its heads.
5. Central heads: the same heads fitted once more on all the training data. The committee mean is these plus
   the members' mean (shrunk) CNN correction; the spread is the members' standard deviation, each member with
   its own heads and CNN (the members estimate the variance of the fit, the central heads are its best value).

The committee is one `torch.nn.Module` (``kind = 'radnet_committee'``) whose state is tensors and whose
``hyperparameters`` are JSON-able, saved with `checkpoint.save`.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from .baselines import TaylorBaseline, count_terms, select_degree
from .datasets import TARGETS, tensor_to_voigt
from .density import AtomCubes
from .radnet import (CubePolynomial, RadNet, TaylorHead, complete_hyperparameters, evaluate_heads,
                     stack_members, stacked_correction_and_jvp, standardize)
from .training import TrainingConfig, train

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
    held out (`train_committee`), kept only where it lowers their absolute residual significantly (`gated_weight`),
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
        """Copy heads fitted by `fit_heads`."""
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
    ``hyperparameters['central'] = True`` (what `train_committee` makes whenever members have heads) the
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

    def mean_and_members(self, cubes: torch.Tensor, positions: torch.Tensor | None = None):
        """(committee mean (B, n_outputs), members' predictions (K, B, n_outputs)), float64, differentiable."""
        corrections = torch.stack([member.residual_weight * member.correction(cubes) for member in self.members])
        members = corrections + torch.stack([member.heads(cubes, positions) for member in self.members])
        if self.central is None:
            return members.mean(dim=0), members
        return self.central(cubes, positions) + self.central.correction_weight * corrections.mean(dim=0), members

    def predict(self, cubes, positions=None):
        """(mean, spread): the committee mean and the members' standard deviation (ddof 1), (B, n_outputs) float64."""
        mean, values = self.mean_and_members(cubes, positions)
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
        """`radnet.stack_members` of the members, remade when any of their tensors changed (training, loading)."""
        return self._cached('members', list(self.members), lambda: stack_members(list(self.members)))

    def _stacked_taylors(self, taylors: list) -> dict:
        """`radnet.TaylorHead.stack` of the given heads, remade when any of their buffers changed."""
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

    def predict_positions(self, positions, cell, numbers, batch_size: int = 64):
        """Mean and spread (numpy) for configurations (B, N, 3) Bohr of one cell: cubes made here."""
        atom_cubes = self.atom_cubes()
        positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
        means, spreads = [], []
        with torch.no_grad():
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                cubes = atom_cubes.batch(chunk, cell, numbers)
                mean, spread = self.predict(cubes, torch.as_tensor(chunk))
                means.append(mean.numpy())
                spreads.append(spread.numpy())
        return np.concatenate(means), np.concatenate(spreads)

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


def build(hyperparameters: dict) -> Committee:
    """Checkpoint registry builder for kind 'radnet_committee'."""
    return Committee(hyperparameters)


def resample(n: int, seed: int, resampling: str = 'bootstrap', holdout: float = 0.2):
    """(train, validation) positions into range(n) for one member."""
    rng = np.random.default_rng(seed)
    if resampling == 'bootstrap':
        sample = rng.integers(0, n, size=n)
        out_of_bag = np.setdiff1d(np.arange(n), sample)
        return sample, out_of_bag
    if resampling == 'split':
        order = rng.permutation(n)
        n_holdout = max(1, int(round(holdout * n)))
        return order[n_holdout:], order[:n_holdout]
    raise ValueError(f"resampling must be 'bootstrap' or 'split', got {resampling!r}")


def fit_head(positions, targets, cell, degree: int, alpha: float, folds: int = 5, seed: int = 0):
    """(head fitted on all configurations, out-of-fold residuals targets - head_without_them(positions))."""
    positions = np.asarray(positions, dtype=float)
    targets = np.asarray(targets, dtype=float)
    head = TaylorBaseline(degree, alpha).fit(positions, targets, cell)
    if folds < 2:
        return head, targets - head.predict(positions)
    residual = np.empty_like(targets)
    fold_of = np.random.default_rng(seed).permutation(len(targets)) % folds
    for fold in range(folds):
        held, kept = fold_of == fold, fold_of != fold
        # The same reference as the full head, so each fold's polynomial is expanded about the same point.
        partial = TaylorBaseline(degree, alpha).fit(positions[kept], targets[kept], cell, reference=head.reference)
        residual[held] = targets[held] - partial.predict(positions[held])
    return head, residual


def fit_projection(cubes: torch.Tensor, components: int, n_outputs: int) -> CubePolynomial:
    """A CubePolynomial whose projection is the leading principal directions of the given cubes (..., 1, n, n, n)."""
    flat = cubes.flatten(-4).reshape(-1, cubes.shape[-1] ** 3).to(torch.float64).numpy()
    mean, scale = flat.mean(axis=0), flat.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standardized = (flat - mean) / scale
    _, singular, directions = np.linalg.svd(standardized, full_matrices=False)
    components = min(int(components), len(singular))
    projection = directions[:components] / np.maximum(singular[:components] / np.sqrt(len(flat)), 1e-12)[:, None]
    polynomial = CubePolynomial(components, cubes.shape[-1], n_outputs)
    with torch.no_grad():
        polynomial.input_mean.copy_(torch.as_tensor(mean))
        polynomial.input_scale.copy_(torch.as_tensor(scale))
        polynomial.projection.copy_(torch.as_tensor(projection))
    return polynomial


def _joint_ridge(taylor_features, taylor_penalty, polynomial_features, polynomial_alpha, targets):
    """Ridge least squares over [Taylor monomials | standardized cube-polynomial features] with a free intercept.

    Returns (taylor coefficients or None, polynomial coefficients (raw features) or None, intercept).
    """
    blocks, penalties, scales = [], [], []
    if taylor_features is not None:
        blocks.append(taylor_features)
        penalties.append(taylor_penalty)
        scales.append(np.ones(taylor_features.shape[1]))
    if polynomial_features is not None:
        std = polynomial_features.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        blocks.append(polynomial_features / std)
        penalties.append(np.full(polynomial_features.shape[1], polynomial_alpha))
        scales.append(std)
    features = np.concatenate(blocks, axis=1)
    scale = np.concatenate(scales)
    mean = features.mean(axis=0)
    centered = features - mean
    target_mean = targets.mean(axis=0)
    gram = centered.T @ centered + len(features) * np.diag(np.concatenate(penalties))
    weights = np.linalg.solve(gram, centered.T @ (targets - target_mean))
    intercept = target_mean - mean @ weights
    weights = weights / scale[:, None]
    n_taylor = taylor_features.shape[1] if taylor_features is not None else 0
    return (weights[:n_taylor] if taylor_features is not None else None,
            weights[n_taylor:] if polynomial_features is not None else None, intercept)


def _taylor_penalty(baseline: TaylorBaseline, n_atoms: int) -> np.ndarray:
    """The penalty of `TaylorBaseline.fit`: alpha on the nonlinear monomials, 1e-12 on the linear ones."""
    n_relative = 3 * (n_atoms - 1)
    orders = np.concatenate([np.full(math.comb(n_relative + order - 1, order), order)
                             for order in range(1, baseline.degree + 1)])
    return np.where(orders > 1, baseline.alpha, 1e-12)


def truncated(polynomial: CubePolynomial, components: int) -> CubePolynomial:
    """The same projection keeping only its leading `components` directions (principal directions nest)."""
    n_outputs = polynomial.coefficients.shape[1]
    smaller = CubePolynomial(components, round(polynomial.input_mean.numel() ** (1 / 3)), n_outputs)
    with torch.no_grad():
        smaller.input_mean.copy_(polynomial.input_mean)
        smaller.input_scale.copy_(polynomial.input_scale)
        smaller.projection.copy_(polynomial.projection[:components])
    return smaller


def fit_heads(positions, cubes, targets, cell, taylor: dict | None, polynomial: dict | None, folds: int = 5,
              seed: int = 0, projection: CubePolynomial | None = None):
    """Fit the frozen heads jointly on all configurations: (TaylorBaseline or None, CubePolynomial or None,
    out-of-fold residuals). taylor: {'degree', 'alpha'}; polynomial: {'components', 'alpha'}."""
    positions = np.asarray(positions, dtype=float)
    targets = np.asarray(targets, dtype=float)
    if taylor is None and polynomial is None:
        raise ValueError('fit_heads needs a Taylor or a polynomial head')
    baseline, principal = None, projection
    projection = None
    taylor_features = polynomial_features = None
    if taylor is not None:
        baseline = TaylorBaseline(taylor['degree'], taylor.get('alpha', 1e-10)).fit(positions, targets, cell)
        taylor_features = baseline._features(positions, np)
        penalty = _taylor_penalty(baseline, positions.shape[1])
    if polynomial is not None:
        if principal is not None and principal.projection.shape[0] >= polynomial['components']:
            projection = truncated(principal, polynomial['components'])
        else:
            projection = fit_projection(cubes, polynomial['components'], targets.shape[1])
        with torch.no_grad():
            polynomial_features = torch.cat([projection.features(chunk) for chunk in cubes.split(256)]).numpy()

    def solve(rows):
        return _joint_ridge(None if taylor_features is None else taylor_features[rows], penalty if taylor else None,
                            None if polynomial_features is None else polynomial_features[rows],
                            polynomial['alpha'] if polynomial else None, targets[rows])

    def predict(solution, rows):
        taylor_weights, polynomial_weights, intercept = solution
        value = np.broadcast_to(intercept, (len(rows), targets.shape[1])).copy()
        if taylor_weights is not None:
            value += taylor_features[rows] @ taylor_weights
        if polynomial_weights is not None:
            value += polynomial_features[rows] @ polynomial_weights
        return value

    everything = np.arange(len(targets))
    solution = solve(everything)
    residual = targets - predict(solution, everything)
    if folds >= 2:
        fold_of = np.random.default_rng(seed).permutation(len(targets)) % folds
        for fold in range(folds):
            held, kept = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
            residual[held] = targets[held] - predict(solve(kept), held)
    taylor_weights, polynomial_weights, intercept = solution
    if baseline is not None:
        baseline.coefficients, baseline.intercept = taylor_weights, intercept
    if projection is not None:
        with torch.no_grad():
            projection.coefficients.copy_(torch.as_tensor(polynomial_weights))
            projection.intercept.copy_(torch.as_tensor(intercept if baseline is None else np.zeros_like(intercept)))
    return baseline, projection, residual


def select_heads(positions, cubes, targets, cell, head: dict, seed: int = 0):
    """(taylor, polynomial) head descriptions with the lowest MAE on a held-out part of the training data.

    Candidates: the Taylor polynomial alone (degree and ridge by `baselines.select_degree`, at most
    head['max_terms'] terms); the cube polynomial alone and jointly with the linear Taylor terms, for each
    number of components and ridge in head['components'] and head['polynomial_alphas'].
    """
    positions = np.asarray(positions, dtype=float)
    n_features = 3 * (positions.shape[1] - 1)
    candidates = []
    if count_terms(n_features, min(head['degrees'])) <= head['max_terms']:
        degree, alpha = select_degree(positions, targets, cell, degrees=tuple(head['degrees']),
                                      alphas=tuple(head['alphas']), validation_fraction=head['selection_fraction'],
                                      seed=seed, max_terms=head['max_terms'])
        candidates.append(({'degree': int(degree), 'alpha': float(alpha)}, None))
    for components in head.get('components') or []:
        for alpha in head['polynomial_alphas']:
            polynomial = {'components': int(components), 'alpha': float(alpha)}
            candidates.append((None, polynomial))
            if n_features <= head['max_terms']:
                candidates.append(({'degree': 1, 'alpha': 1e-10}, polynomial))
    if not candidates:
        raise ValueError('no head fits head.max_terms and no cube-polynomial components are given: raise '
                         'head.max_terms, give head.components, or set head to None')
    order = np.random.default_rng(seed).permutation(len(targets))
    n_validation = max(1, int(round(head['selection_fraction'] * len(targets))))
    validation, train = order[:n_validation], order[n_validation:]
    components = [p['components'] for _, p in candidates if p is not None]
    principal = fit_projection(cubes[train], max(components), targets.shape[1]) if components else None
    best = None
    for taylor, polynomial in candidates:
        baseline, projection, _ = fit_heads(positions[train], cubes[train], targets[train], cell, taylor, polynomial,
                                            folds=0, projection=principal)
        value = np.zeros((len(validation), targets.shape[1]))
        if baseline is not None:
            value += baseline.predict(positions[validation])
        if projection is not None:
            with torch.no_grad():
                value += projection(cubes[validation]).numpy()
        mae = float(np.abs(value - targets[validation]).mean())
        if best is None or mae < best[0]:
            best = (mae, taylor, polynomial)
    return best[1], best[2], best[0]


def shrink_correction(model: RadNet, cubes: torch.Tensor, residual, indices) -> np.ndarray:
    """Set ``model.residual_weight`` to the least-squares weight in [0, 1] of its correction against `residual`.

    Per component: w = clip(<r, c> / <c, c>, 0, 1) over the configurations `indices` (the member's validation
    set, which its CNN never trained on). Returns w.
    """
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    with torch.no_grad():
        correction = torch.cat([model.correction(cubes[chunk].to(model.dtype)) for chunk in indices.split(256)]).numpy()
    weight = least_squares_weight(correction, np.asarray(residual, dtype=float)[indices.numpy()])
    with torch.no_grad():
        model.residual_weight.copy_(torch.as_tensor(weight))
    return weight


def gated_weight(correction, residual, z: float = 2.0) -> np.ndarray:
    """`least_squares_weight`, set to 0 for each component where the weighted correction does not lower the absolute
    residual significantly: a paired one-sided test on the rows, mean(|r| - |r - w c|) > z standard errors.

    The least-squares weight is fitted on the rows it is judged on, and a correction at the noise level of the
    residual still gets w > 0 (it lowered the GaAs out-of-bag MSE and raised the test MAE): so the committee
    mean keeps a CNN correction only where it is clearly better than its heads alone.
    """
    weight = least_squares_weight(correction, residual)
    gain = np.abs(residual) - np.abs(residual - weight * correction)  # (rows, components)
    error = gain.std(axis=0, ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.full(gain.shape[1], np.inf)
    return np.where(gain.mean(axis=0) > z * error, weight, 0.0)


def least_squares_weight(correction, residual) -> np.ndarray:
    """Per component, clip(<r, c> / <c, c>, 0, 1) over rows (0 where the correction is 0)."""
    denominator = (correction * correction).sum(axis=0)
    weight = np.where(denominator > 0, (residual * correction).sum(axis=0) / np.where(denominator > 0, denominator, 1),
                      0.0)
    return np.clip(weight, 0.0, 1.0)


def train_member(model: RadNet, cubes: torch.Tensor, residual: np.ndarray, train_indices, validation_indices,
                 config: TrainingConfig, log=print, description=''):
    """Fit one RadNet's CNN in place on cubes (M, N, 1, n, n, n) and the targets left to it, `residual` (M, K).

    The model's Taylor head, if any, is set by the caller; `residual` is then what the head leaves.
    """
    residual = np.asarray(residual, dtype=float)
    if model.taylor is not None or model.polynomial is not None:
        model.zero_output_()
    mean, std = standardize(residual[train_indices])
    with torch.no_grad():
        model.output_offset.copy_(torch.as_tensor(mean))
        model.output_scale.copy_(torch.as_tensor(std))
        model.residual_weight.fill_(1.0)
    model.set_input_standardization(cubes[torch.as_tensor(np.unique(train_indices))])
    normalized = torch.as_tensor((residual - mean) / std, dtype=model.dtype)
    model_cubes = cubes.to(model.dtype)

    def loss(member, indices):
        return torch.mean((member.normalized(model_cubes[indices]) - normalized[indices]) ** 2)

    return train(model, loss, train_indices, validation_indices, config, log=log, description=description)


def train_committee(cubes: torch.Tensor, positions, targets, cell, n_members: int = 4,
                    member_hyperparameters: dict | None = None, density: dict | None = None,
                    config: TrainingConfig | None = None, resampling: str = 'bootstrap', holdout: float = 0.2,
                    target: str | None = None, log=print, seed: int = 0, folds: int = 5, shrink: bool = True):
    """Train a committee on all the configurations given (the caller keeps its own test set apart).

    With ``member_hyperparameters['taylor'] = {'degree': d, 'n_atoms': N, 'alpha': a}`` and/or
    ``['polynomial'] = {'components': k, 'alpha': a}`` each member fits these frozen heads jointly on its own
    training part (`fit_heads`, `folds` out-of-fold residuals for its CNN) and, when `shrink`, its CNN correction
    is weighted on its validation part (`shrink_correction`); the committee's central heads are fitted on all
    the configurations (the heads of its mean). Without heads the CNN learns the targets themselves
    and is not shrunk. Returns (committee, results): one `training.TrainingResult` per member, whose
    ``summary`` holds the member's validation MAE with and without its CNN and its weights w.
    """
    config = config or TrainingConfig()
    member_hp = complete_hyperparameters(member_hyperparameters)
    density = dict(density or DEFAULT_DENSITY)
    targets = np.asarray(targets, dtype=float)
    positions = np.asarray(positions, dtype=float)
    with_heads = bool(member_hp['taylor'] or member_hp['polynomial'])
    committee = Committee({'n_members': n_members, 'member': member_hp, 'density': density, 'target': target,
                           'resampling': resampling, 'training': config.as_dict(), 'seed': seed,
                           'central': with_heads})
    if with_heads:
        # The heads of the committee mean, fitted on all the configurations (see `Committee`), and their
        # out-of-fold residuals, against which the members' mean correction is weighted below.
        head, polynomial, central_residual = fit_heads(positions, cubes, targets, cell, member_hp['taylor'],
                                                       member_hp['polynomial'], folds, seed)
        committee.central.set_from(head, polynomial)
        held_out_correction = np.zeros_like(targets)
        held_out_count = np.zeros(len(targets))
    results = []
    for k, member in enumerate(committee.members):
        member_seed = seed + 1000 * k
        torch.manual_seed(member_seed)
        fresh = RadNet(member_hp)  # its own initialization from the member's seed
        member.load_state_dict(fresh.state_dict())
        train_indices, validation_indices = resample(len(targets), member_seed, resampling, holdout)
        residual = targets
        if with_heads:
            # The member's own heads, fitted on its training part: out-of-fold residuals there, true held-out
            # residuals on its validation part (so members differ where the heads are uncertain).
            head, polynomial, train_residual = fit_heads(
                positions[train_indices], cubes[train_indices], targets[train_indices], cell, member_hp['taylor'],
                member_hp['polynomial'], folds, member_seed)
            if head is not None:
                member.taylor.set_from(head)
            if polynomial is not None:
                member.polynomial.load_state_dict(polynomial.state_dict())
            member.zero_output_()
            with torch.no_grad():
                member.output_offset.zero_()
                validation_value = member(cubes[torch.as_tensor(validation_indices)],
                                          torch.as_tensor(positions[validation_indices])).numpy()
            residual = np.zeros_like(targets)
            residual[train_indices] = train_residual
            residual[validation_indices] = targets[validation_indices] - validation_value
            if log:
                log(f'[member {k + 1}/{n_members}] heads: Taylor {member_hp["taylor"]}, cube polynomial '
                    f'{member_hp["polynomial"]}: out-of-fold MAE {np.abs(train_residual).mean():.4e} ({folds} folds), '
                    f'validation MAE {np.abs(residual[validation_indices]).mean():.4e}')
        member_config = copy.copy(config)
        member_config.seed = member_seed
        start = time.perf_counter()
        description = f'[member {k + 1}/{n_members}] '
        result = train_member(member, cubes, residual, train_indices, validation_indices, member_config, log=log,
                              description=description)
        summary = {'validation_mae_head': float(np.abs(residual[validation_indices]).mean())}
        with torch.no_grad():
            correction = member.correction(cubes[torch.as_tensor(validation_indices)].to(member.dtype)).numpy()
        summary['validation_mae_unshrunk'] = float(np.abs(residual[validation_indices] - correction).mean())
        if with_heads and shrink:
            weight = shrink_correction(member, cubes, residual, validation_indices)
            summary['residual_weight'] = weight.tolist()
            summary['validation_mae'] = float(np.abs(residual[validation_indices] - weight * correction).mean())
        else:
            summary['validation_mae'] = summary['validation_mae_unshrunk']
        result.summary.update(summary)
        results.append(result)
        if with_heads:
            # This member's (shrunk) correction on the configurations it never trained on.
            with torch.no_grad():
                held_out_correction[validation_indices] += (member.residual_weight * member.correction(
                    cubes[torch.as_tensor(validation_indices)].to(member.dtype))).numpy()
            np.add.at(held_out_count, validation_indices, 1.0)
        if log:
            weights = f', CNN weight {", ".join(f"{w:.2f}" for w in summary["residual_weight"])}' \
                if 'residual_weight' in summary else ''
            log(f'{description}best validation loss {result.best_validation_loss:.4e} at epoch {result.best_epoch}; '
                f'validation MAE head {summary["validation_mae_head"]:.4e}, with CNN '
                f'{summary["validation_mae_unshrunk"]:.4e}, shrunk {summary["validation_mae"]:.4e}{weights}; '
                f'{time.perf_counter() - start:.1f} s')
    if with_heads:
        # Out-of-bag weight of the mean correction: on each configuration held out by some member, those members'
        # mean correction against the central heads' out-of-fold residual (in-sample if folds < 2).
        seen = held_out_count > 0
        weight = (gated_weight(held_out_correction[seen] / held_out_count[seen, None], central_residual[seen])
                  if seen.any() else np.zeros(targets.shape[1]))
        with torch.no_grad():
            committee.central.correction_weight.copy_(torch.as_tensor(weight))
        if log:
            log(f'committee mean: central heads + members\' mean CNN correction with weight '
                f'{", ".join(f"{w:.2f}" for w in weight)} (out of bag, {int(seen.sum())} configurations)')
    return committee, results


#: Defaults of `fit_committee` (every key may be overridden; nested dicts are merged key by key).
DEFAULT_FIT_HYPERPARAMETERS = {
    'n_members': 3,
    'resampling': 'split',  # each member: 'split' (train on 1 - holdout, early-stop on holdout) or 'bootstrap'
    'holdout': 0.2,
    # The per-atom CNN (radnet.complete_hyperparameters: preset tiny/light/paper, cube_size, linear_head, dtype).
    'member': {'preset': 'tiny', 'cube_size': 9, 'linear_head': True, 'dtype': 'float32'},
    # Density cubes (Bohr; the number of voxels per edge is member.cube_size).
    'density': {key: value for key, value in DEFAULT_DENSITY.items() if key != 'n'},
    # Taylor head: degree and ridge chosen among these on a held-out `selection_fraction` of the training data,
    # polynomials with more than `max_terms` terms skipped; `folds` for the out-of-fold residuals. None: no head
    # (the paper's formulation: the CNN learns the targets themselves).
    # Cube polynomial (radnet.CubePolynomial): a quadratic in k principal components of each atom's cube, alone
    # or jointly with the linear Taylor terms, k in `components` and ridge in `polynomial_alphas`; the candidate
    # with the lowest held-out MAE is the head ([] for components: Taylor heads only).
    'head': {'degrees': [1, 2, 3, 4, 5, 6, 7], 'alphas': [1e-10, 1e-8, 1e-6, 1e-4, 1e-2], 'max_terms': 1200,
             'components': [20, 40], 'polynomial_alphas': [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
             'selection_fraction': 0.25, 'folds': 5},
    # Shrink each member's CNN correction toward 0 by its least-squares weight on its validation set.
    'shrink': True,
    # training.TrainingConfig fields (seed comes from the member).
    'training': {'epochs': 20, 'batch_size': 32, 'learning_rate': 2e-3, 'weight_decay': 0.0, 'patience': 20,
                 'min_learning_rate': 1e-5, 'plateau_factor': 0.5, 'plateau_patience': 6, 'schedule': 'plateau',
                 'log_every': 10, 'progress': False},
}


def complete_fit_hyperparameters(hyperparameters: dict | None = None) -> dict:
    """DEFAULT_FIT_HYPERPARAMETERS updated by `hyperparameters` (nested dicts merged); unknown keys refused."""
    values = copy.deepcopy(DEFAULT_FIT_HYPERPARAMETERS)
    for key, value in (hyperparameters or {}).items():
        if key not in values:
            raise ValueError(f'unknown committee hyperparameter {key!r}: known are {sorted(values)}')
        if isinstance(values[key], dict) and isinstance(value, dict):
            values[key].update(copy.deepcopy(value))
        else:
            values[key] = copy.deepcopy(value)
    training_fields = set(TrainingConfig().as_dict()) - {'seed'}
    unknown = set(values['training']) - training_fields
    if unknown:
        raise ValueError(f'unknown training hyperparameters {sorted(unknown)}: known are {sorted(training_fields)}')
    unknown = set(values['density']) - set(DEFAULT_DENSITY) - {'cutoff', 'switch_width'}
    if unknown:
        raise ValueError(f'unknown density hyperparameters {sorted(unknown)}')
    if values['head'] is not None:
        unknown = set(values['head']) - set(DEFAULT_FIT_HYPERPARAMETERS['head'])
        if unknown:
            raise ValueError(f'unknown head hyperparameters {sorted(unknown)}')
    if int(values['n_members']) < 1:
        raise ValueError('n_members must be at least 1')
    complete_hyperparameters(values['member'])  # fails early on a bad network description
    return values


def dielectric_targets(tensors) -> np.ndarray:
    """ε∞ tensors (n, 3, 3) -> the (n, 6) Voigt targets of a 'dielectric' committee (xx yy zz yz xz xy)."""
    tensors = np.asarray(tensors, dtype=float)
    if tensors.ndim != 3 or tensors.shape[1:] != (3, 3):
        raise ValueError(f'expected ε∞ tensors of shape (n, 3, 3), got {tensors.shape}')
    return tensor_to_voigt(tensors)


def fit_committee(positions, cell, numbers, targets, target: str, hyperparameters: dict | None = None, log=print,
                  seed: int = 0, cubes: torch.Tensor | None = None):
    """Fit a radnet committee to configurations of one cell; the whole recipe is in `hyperparameters`.

    positions (n, N, 3) Bohr, cell (3, 3) Bohr (rows), numbers (N,), targets (n, 3) P in e/Bohr² (branch
    fixed) for ``target='polarization'`` or (n, 6) Voigt ε∞ (`dielectric_targets`) for ``'dielectric'``.
    hyperparameters: overrides of DEFAULT_FIT_HYPERPARAMETERS. log: callable taking a line (None: silent).
    cubes: the density cubes of `positions` if already made (must match the density hyperparameters).

    Returns (committee, results): ``committee.hyperparameters['fit']`` holds the completed hyperparameters and
    the head chosen; results[k] is member k's `training.TrainingResult` (``curve_arrays()`` for checkpoints,
    ``summary`` for the validation MAE with and without its CNN and its shrinkage weights).
    """
    if target not in TARGETS:
        raise ValueError(f'unknown target {target!r}: choose one of {sorted(TARGETS)}')
    hp = complete_fit_hyperparameters(hyperparameters)
    positions = np.asarray(positions, dtype=float)
    numbers = np.asarray(numbers, dtype=int)
    cell = np.asarray(cell, dtype=float)
    targets = np.asarray(targets, dtype=float)
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise ValueError(f'positions must be (n, {len(numbers)}, 3) Bohr, got {positions.shape}')
    if cell.shape != (3, 3):
        raise ValueError(f'cell must be (3, 3) Bohr, got {cell.shape}')
    if targets.shape != (len(positions), TARGETS[target]):
        raise ValueError(f'{target} targets must be ({len(positions)}, {TARGETS[target]}), got {targets.shape}'
                         + (' (use dielectric_targets for (n, 3, 3) tensors)' if target == 'dielectric' else ''))
    if not np.isfinite(targets).all() or not np.isfinite(positions).all():
        raise ValueError('positions and targets must be finite')
    n_members = int(hp['n_members'])
    n_validation = max(1, int(round(hp['holdout'] * len(positions))))
    if len(positions) - n_validation < 2:
        raise ValueError(f'too few configurations ({len(positions)}) to train and validate a committee')

    member = dict(hp['member'], n_outputs=TARGETS[target])
    density = dict(hp['density'], n=member.get('cube_size', 9))
    if cubes is None:
        start = time.perf_counter()
        cubes = atom_cubes_from(density).batch(positions, cell, numbers)
        if log:
            log(f'{tuple(cubes.shape)} density cubes in {time.perf_counter() - start:.1f} s')
    elif tuple(cubes.shape[:2]) != positions.shape[:2] or cubes.shape[-1] != density['n']:
        raise ValueError(f'cubes of shape {tuple(cubes.shape)} do not match the positions and cube size')

    chosen_head = None
    if hp['head'] is not None:
        taylor, polynomial, selection_mae = select_heads(positions, cubes, targets, cell, hp['head'], seed=seed)
        chosen_head = {'taylor': taylor, 'polynomial': polynomial, 'selection_mae': selection_mae}
        if log:
            log(f'head chosen on {hp["head"]["selection_fraction"]:.0%} held out: Taylor {taylor}, cube polynomial '
                f'{polynomial}, MAE {selection_mae:.4e}')
        if taylor is not None:
            member['taylor'] = dict(taylor, n_atoms=len(numbers))
        member['polynomial'] = polynomial
    config = TrainingConfig(**hp['training'], seed=seed)
    committee, results = train_committee(
        cubes, positions, targets, cell, n_members=n_members, member_hyperparameters=member, density=density,
        config=config, resampling=hp['resampling'], holdout=hp['holdout'], target=target, log=log, seed=seed,
        folds=hp['head']['folds'] if hp['head'] is not None else 0, shrink=bool(hp['shrink']))
    committee.hyperparameters['fit'] = dict(hp, chosen_head=chosen_head)
    return committee, results
