"""The frozen heads of a radnet member or committee, and their closed-form fits.

- ``TaylorHead``: the ridge polynomial of `taylor.TaylorBaseline` in the atoms' displacements, as torch buffers
  (differentiable in the positions; only for the cell it was fitted on);
- ``CubePolynomial``: Σ_I of a quadratic in the leading principal components of each atom's density cube
  (any cell; differentiable through the cubes);
- `fit_heads` fits either or both jointly by ridge least squares (with out-of-fold residuals for the CNN that
  learns what they leave), `select_heads` picks the head with the lowest held-out error.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ..common import standardization
from .taylor import TaylorBaseline, count_terms, monomial_indices, select_degree


class TaylorHead(nn.Module):
    """The ridge polynomial of `taylor.TaylorBaseline` as torch buffers (frozen, float64)."""

    def __init__(self, degree: int, n_atoms: int, n_outputs: int):
        super().__init__()
        self.degree = int(degree)
        n_terms = count_terms(3 * (n_atoms - 1), degree)
        self.register_buffer('reference', torch.zeros(n_atoms, 3, dtype=torch.float64))
        self.register_buffer('cell', torch.eye(3, dtype=torch.float64))
        self.register_buffer('scale', torch.ones((), dtype=torch.float64))
        self.register_buffer('coefficients', torch.zeros(n_terms, n_outputs, dtype=torch.float64))
        self.register_buffer('intercept', torch.zeros(n_outputs, dtype=torch.float64))
        self._steps = _monomial_steps(3 * (n_atoms - 1), self.degree)

    def set_from(self, baseline: TaylorBaseline) -> 'TaylorHead':
        if baseline.degree != self.degree or baseline.coefficients.shape != tuple(self.coefficients.shape):
            raise ValueError('the baseline does not match this head (degree, atoms or outputs)')
        with torch.no_grad():
            for key in ('reference', 'cell', 'coefficients', 'intercept'):
                getattr(self, key).copy_(torch.as_tensor(getattr(baseline, key)))
            self.scale.fill_(baseline.scale)
        return self

    def baseline(self) -> TaylorBaseline:
        baseline = TaylorBaseline(self.degree)
        for key in ('reference', 'cell', 'coefficients', 'intercept'):
            setattr(baseline, key, getattr(self, key).detach().cpu().numpy())
        baseline.scale = float(self.scale)
        return baseline

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) Bohr -> (B, n_outputs) float64, differentiable in positions."""
        return self.stacked([self], positions)[0]

    @staticmethod
    def stacked(heads: list, positions: torch.Tensor, stacked: dict | None = None) -> torch.Tensor:
        """Several heads of one degree and cell size (a committee's) at once: (B, N, 3) -> (heads, B, n_outputs).

        The same operations as `TaylorBaseline.torch_predict`, on the buffers directly (no numpy round trip),
        with the heads as a leading batch axis so a committee costs the operations of one head.
        """
        first = heads[0]
        if any(head.degree != first.degree or head.reference.shape != first.reference.shape for head in heads):
            raise ValueError('stacked Taylor heads must share their degree, atoms and outputs')
        if positions.shape[-2] != first.reference.shape[0]:
            raise ValueError(f'the Taylor head was fitted on {first.reference.shape[0]} atoms, '
                             f'got {positions.shape[-2]}: it only applies to the cell it was fitted on')
        stacked = stacked or TaylorHead.stack(heads)
        x = _scaled_displacements(stacked, positions)  # (H, B, 3(N-1))
        columns = [x]
        for parents, features in first._steps:
            columns.append((columns[-1] @ parents) * (x @ features))
        return torch.cat(columns, dim=-1) @ stacked['coefficients'] + stacked['intercept'][:, None]

    @staticmethod
    def stack(heads: list) -> dict:
        """The heads' buffers stacked (leading axis H), with the inverse cells, for `stacked_with_gradient`."""
        cell = torch.stack([head.cell for head in heads])
        return {'reference': torch.stack([head.reference for head in heads]), 'cell': cell,
                'inverse_cell': torch.linalg.inv(cell), 'scale': torch.stack([head.scale for head in heads])[:, None],
                'coefficients': torch.stack([head.coefficients for head in heads]),
                'intercept': torch.stack([head.intercept for head in heads])}

    @staticmethod
    def stacked_with_gradient(heads: list, positions: torch.Tensor, stacked: dict | None = None):
        """`stacked` for one configuration (N, 3) Bohr and its derivative, without autograd:
        (values (H, K), ∂values/∂positions (H, K, N, 3)), float64.

        Forward mode through the monomial recursion: with c_k = (c_{k-1} P_k) ⊙ (x F_k), ∂c_k/∂x_j =
        (∂c_{k-1}/∂x_j P_k) ⊙ (x F_k) + (c_{k-1} P_k) ⊙ F_k[j]; x are the displacements of atoms 1..N-1 relative to
        atom 0 over the scale (minimum image: locally the identity), so ∂/∂R_I = ∂/∂x_I / scale for I >= 1 and
        atom 0 gets minus their sum.
        """
        first = heads[0]
        if positions.shape[0] != first.reference.shape[0]:
            TaylorHead.stacked(heads, positions.unsqueeze(0))  # its checks and their messages
        with torch.no_grad():
            stacked = stacked or TaylorHead.stack(heads)
            scale = stacked['scale']
            x = _scaled_displacements(stacked, positions)  # (H, D)
            n_features = x.shape[-1]
            columns = [x]
            tangent = torch.eye(n_features, dtype=torch.float64).expand(len(heads), -1, -1)  # (H, D_j, terms)
            tangents = [tangent]
            for parents, features in first._steps:
                from_parent = columns[-1] @ parents  # (H, terms_k)
                from_feature = x @ features
                tangent = (tangent @ parents) * from_feature[:, None, :] + from_parent[:, None, :] * features
                columns.append(from_parent * from_feature)
                tangents.append(tangent)
            coefficients, intercept = stacked['coefficients'], stacked['intercept']  # (H, terms, K), (H, K)
            values = (torch.cat(columns, dim=-1)[:, None] @ coefficients)[:, 0] + intercept
            gradient = torch.cat(tangents, dim=-1) @ coefficients / scale[:, :, None]  # (H, D, K)
            gradient = gradient.reshape(len(heads), -1, 3, gradient.shape[-1]).permute(0, 3, 1, 2)  # (H, K, N-1, 3)
            gradient = torch.cat([-gradient.sum(dim=2, keepdim=True), gradient], dim=2)
        return values, gradient


def _scaled_displacements(stacked: dict, positions: torch.Tensor) -> torch.Tensor:
    """The Taylor heads' features: displacements from each head's reference (minimum image) of atoms 1..N-1
    relative to atom 0, over the scale; positions (..., N, 3) Bohr -> (H, ..., 3(N-1)), heads from `TaylorHead.stack`."""
    def per_head(tensor):  # (H, ...) broadcast over the batch axes of positions
        return tensor.reshape(tensor.shape[:1] + (1,) * (positions.dim() - 2) + tensor.shape[1:])

    delta = positions.to(torch.float64) - per_head(stacked['reference'])
    fractional = delta @ per_head(stacked['inverse_cell'])
    delta = (fractional - torch.round(fractional).detach()) @ per_head(stacked['cell'])
    return (delta[..., 1:, :] - delta[..., :1, :]).flatten(-2) / per_head(stacked['scale'])


@functools.lru_cache(maxsize=32)
def _monomial_steps(n_features: int, degree: int) -> tuple:
    """The monomials of order k as (monomial of order k-1) x (one feature), in the order of
    `taylor.monomial_indices`, the two factors picked by 0/1 matrices (exact: one term is 1·x, the others 0·x):
    ((parents, features) per order 2..degree). Matrix products keep the batched backward of Z* and Raman
    derivatives (is_grads_batched) vectorized; indexing's backward (index_put) is looped per cotangent under vmap
    and cost 4 ms per GaAs prediction. They follow from the features and degree (so are not saved), and are made
    once per process (shared by every head; never modified)."""
    orders = monomial_indices(n_features, degree)
    steps = []
    for previous, current in zip(orders, orders[1:]):
        row = {tuple(indices): k for k, indices in enumerate(previous.tolist())}
        parents = torch.zeros(len(previous), len(current), dtype=torch.float64)
        features = torch.zeros(n_features, len(current), dtype=torch.float64)
        for k, indices in enumerate(current.tolist()):
            parents[row[tuple(indices[:-1])], k] = 1.0
            features[indices[-1], k] = 1.0
        steps.append((parents, features))
    return tuple(steps)


def polynomial_feature_count(components: int) -> int:
    return components + components * (components + 1) // 2


class CubePolynomial(nn.Module):
    """P(cubes) = c + Σ_I q(z_I): a quadratic q of k linear projections z_I of each atom's standardized cube.

    z_I = projection · (cube_I - input_mean) / input_scale (the leading principal directions of the training
    cubes, scaled to unit variance); features Σ_I [z_I, z_I,a z_I,b (a <= b)]; coefficients fitted by ridge
    least squares (`fit_heads`). Like the CNN it is a sum of identical per-atom functions of the
    cubes, so it applies to any cell and is differentiable with respect to positions through the cubes; unlike
    it, it is fitted in closed form in seconds. float64 throughout.
    """

    def __init__(self, components: int, cube_size: int, n_outputs: int):
        super().__init__()
        n, k = cube_size, int(components)
        self.register_buffer('input_mean', torch.zeros(n**3, dtype=torch.float64))
        self.register_buffer('input_scale', torch.ones(n**3, dtype=torch.float64))
        self.register_buffer('projection', torch.zeros(k, n**3, dtype=torch.float64))
        self.register_buffer('coefficients', torch.zeros(polynomial_feature_count(k), n_outputs, dtype=torch.float64))
        self.register_buffer('intercept', torch.zeros(n_outputs, dtype=torch.float64))
        rows, columns = torch.triu_indices(k, k)
        self.register_buffer('pair_rows', rows, persistent=False)
        self.register_buffer('pair_columns', columns, persistent=False)

    def features(self, cubes: torch.Tensor) -> torch.Tensor:
        """cubes (..., N, 1, n, n, n) -> summed features (..., F) float64."""
        flat = cubes.flatten(-4).to(torch.float64)
        # The standardization folded into the projection, the products z_a z_b summed over the atoms as one matrix
        # product: the same features to rounding, 3x faster for a pool of 16-atom cells.
        z = flat @ (self.projection / self.input_scale).T - (self.input_mean / self.input_scale) @ self.projection.T
        quadratic = (z.transpose(-1, -2) @ z)[..., self.pair_rows, self.pair_columns]  # (..., k(k+1)/2)
        return torch.cat([z.sum(dim=-2), quadratic], dim=-1)

    def forward(self, cubes: torch.Tensor) -> torch.Tensor:
        return self.features(cubes) @ self.coefficients + self.intercept

    def value_and_cube_jacobian(self, cubes: torch.Tensor):
        """For one structure, cubes (N, 1, n, n, n): the value (n_outputs,) and its derivative with respect to the
        cubes (n_outputs, N, 1, n, n, n), float64, without autograd: q = L·z + Σ_{a<=b} Q_ab z_a z_b per atom, so
        ∂q/∂z = L + (Q + Qᵀ) z and ∂z/∂cube = projection / input_scale."""
        with torch.no_grad():
            flat = cubes.flatten(-4).to(torch.float64)
            z = ((flat - self.input_mean) / self.input_scale) @ self.projection.T  # (N, k)
            k = z.shape[-1]
            features = torch.cat([z, z[:, self.pair_rows] * z[:, self.pair_columns]], dim=-1).sum(dim=0)
            value = features @ self.coefficients + self.intercept
            quadratic = torch.zeros(self.coefficients.shape[1], k, k, dtype=torch.float64)
            quadratic[:, self.pair_rows, self.pair_columns] = self.coefficients[k:].T
            grad_z = self.coefficients[:k].T[:, None, :] + z @ (quadratic + quadratic.transpose(1, 2))  # (K, N, k)
            grad = (grad_z @ self.projection) / self.input_scale  # (K, N, n³)
        return value, grad.reshape(grad.shape[:2] + tuple(cubes.shape[1:]))


def evaluate_heads(taylor, polynomial, cubes: torch.Tensor, positions, n_outputs: int) -> torch.Tensor:
    """P(cubes) + T(positions) (B, n_outputs) float64 for optional heads (zeros when both are None)."""
    if taylor is not None and positions is None:
        raise ValueError('this model has a Taylor head: pass the positions too')
    value = polynomial(cubes) if polynomial is not None else None
    if taylor is not None:
        value = taylor(positions) if value is None else value + taylor(positions)
    if value is None:
        value = torch.zeros(cubes.shape[0], n_outputs, dtype=torch.float64, device=cubes.device)
    return value


def fit_projection(cubes: torch.Tensor, components: int, n_outputs: int) -> CubePolynomial:
    """A CubePolynomial whose projection is the leading principal directions of the given cubes (..., 1, n, n, n)."""
    flat = cubes.flatten(-4).reshape(-1, cubes.shape[-1] ** 3).to(torch.float64).numpy()
    mean, scale = standardization(flat)
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
        _, std = standardization(polynomial_features)
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
        penalty = baseline.penalty(positions.shape[1])
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

    Candidates: the Taylor polynomial alone (degree and ridge by `taylor.select_degree`, at most
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


