"""Taylor baseline: a ridge-regularized polynomial in the atoms' displacements relative to atom 0.

For a fixed cell whose atoms move a little around a reference structure, the response is smooth in
the displacements, so a low-order Taylor polynomial is a strong baseline. Features are the
displacements of atoms 1..N-1 relative to atom 0 (so a rigid translation changes nothing),
measured from the reference positions with the minimum-image convention, divided by one length
scale (their standard deviation in the fitted data) so monomials of every order are O(1).

`TaylorBaseline` fits in numpy (least squares) and evaluates in numpy or in torch: the torch path is
differentiable with respect to positions, so a committee member that uses the baseline as a head
still gives Z* and Raman tensors by autograd. It only applies to the cell (number and order of atoms)
it was fitted on.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch


def count_terms(n_features: int, degree: int) -> int:
    """Number of monomials of orders 1..degree in n_features variables (without building them)."""
    return sum(math.comb(n_features + order - 1, order) for order in range(1, degree + 1))


def monomial_indices(n_features: int, degree: int) -> list[np.ndarray]:
    """For each order 1..degree, an (n_monomials, order) array of feature indices (with repetition)."""
    return [
        np.array(list(itertools.combinations_with_replacement(range(n_features), order)), dtype=np.int64)
        for order in range(1, degree + 1)
    ]


class TaylorBaseline:
    """y(R) ≈ c + Σ polynomial terms in (u_I - u_0)/scale, up to `degree`; ridge `alpha` on orders >= 2."""

    def __init__(self, degree: int = 1, alpha: float = 1e-8):
        if degree < 1:
            raise ValueError(f'degree must be >= 1, got {degree}')
        self.degree = int(degree)
        self.alpha = float(alpha)
        self.reference = None  # (N, 3) reference positions
        self.cell = None  # (3, 3) rows
        self.scale = 1.0
        self.coefficients = None  # (n_terms, n_outputs), without the intercept
        self.intercept = None  # (n_outputs,)

    # ---- features -------------------------------------------------------------------------
    def _relative_displacements(self, positions, xp):
        """(M, N, 3) positions -> (M, 3(N-1)) minimum-image displacements relative to atom 0, scaled."""
        if xp is torch:
            reference = torch.as_tensor(self.reference, dtype=positions.dtype, device=positions.device)
            cell = torch.as_tensor(self.cell, dtype=positions.dtype, device=positions.device)
            delta = positions - reference
            fractional = delta @ torch.linalg.inv(cell)
            delta = (fractional - torch.round(fractional).detach()) @ cell
        else:
            delta = np.asarray(positions, dtype=float) - self.reference
            fractional = delta @ np.linalg.inv(self.cell)
            delta = (fractional - np.round(fractional)) @ self.cell
        relative = delta[:, 1:, :] - delta[:, :1, :]
        return relative.reshape(relative.shape[0], -1) / self.scale

    def _features(self, positions, xp):
        x = self._relative_displacements(positions, xp)
        columns = []
        for indices in monomial_indices(x.shape[1], self.degree):
            if xp is torch:
                columns.append(x[:, torch.as_tensor(indices)].prod(dim=-1))
            else:
                columns.append(x[:, indices].prod(axis=-1))
        return torch.cat(columns, dim=1) if xp is torch else np.concatenate(columns, axis=1)

    # ---- fit and evaluate -----------------------------------------------------------------
    def fit(self, positions, targets, cell, reference=None) -> 'TaylorBaseline':
        """Least squares with a ridge penalty on the standardized monomials (the intercept is free)."""
        positions = np.asarray(positions, dtype=float)
        targets = np.asarray(targets, dtype=float)
        self.cell = np.asarray(cell, dtype=float)
        self.reference = positions.mean(axis=0) if reference is None else np.asarray(reference, dtype=float)
        self.scale = 1.0
        self.scale = float(self._relative_displacements(positions, np).std()) or 1.0
        features = self._features(positions, np)
        feature_mean = features.mean(axis=0)
        target_mean = targets.mean(axis=0)
        centered = features - feature_mean
        gram = centered.T @ centered
        ridge = len(features) * np.diag(self.penalty(positions.shape[1]))
        self.coefficients = np.linalg.solve(gram + ridge, centered.T @ (targets - target_mean))
        self.intercept = target_mean - feature_mean @ self.coefficients
        return self

    def penalty(self, n_atoms: int) -> np.ndarray:
        """Ridge weight per monomial: alpha on the nonlinear ones, 1e-12 on the linear ones.

        The ridge acts on the nonlinear terms only: the linear (Born-charge-like) terms are well
        determined by a few configurations, and shrinking them costs more than it saves.
        """
        n_relative = 3 * (n_atoms - 1)
        orders = np.concatenate([np.full(math.comb(n_relative + order - 1, order), order)
                                 for order in range(1, self.degree + 1)])
        return np.where(orders > 1, self.alpha, 1e-12)

    def predict(self, positions) -> np.ndarray:
        return self._features(np.asarray(positions, dtype=float), np) @ self.coefficients + self.intercept

    def torch_predict(self, positions: torch.Tensor) -> torch.Tensor:
        """The same polynomial in torch, differentiable with respect to `positions` (M, N, 3)."""
        coefficients = torch.as_tensor(self.coefficients, dtype=positions.dtype, device=positions.device)
        intercept = torch.as_tensor(self.intercept, dtype=positions.dtype, device=positions.device)
        return self._features(positions, torch) @ coefficients + intercept

    # ---- (de)serialization as plain tensors, for the checkpoint format -------------------------
    def state_dict(self) -> dict:
        return {
            'degree': torch.tensor(self.degree), 'alpha': torch.tensor(self.alpha),
            'scale': torch.tensor(self.scale, dtype=torch.float64),
            'reference': torch.as_tensor(self.reference), 'cell': torch.as_tensor(self.cell),
            'coefficients': torch.as_tensor(self.coefficients), 'intercept': torch.as_tensor(self.intercept),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> 'TaylorBaseline':
        baseline = cls(int(state['degree']), float(state['alpha']))
        baseline.scale = float(state['scale'])
        for key in ('reference', 'cell', 'coefficients', 'intercept'):
            setattr(baseline, key, state[key].detach().cpu().numpy().astype(float))
        return baseline


def select_degree(positions, targets, cell, degrees=(1, 2, 3), alphas=(1e-10, 1e-8, 1e-6, 1e-4),
                  validation_fraction=0.25, seed=0, max_terms=None):
    """Pick (degree, alpha) with the lowest MAE on a held-out part of the given (training) data."""
    positions = np.asarray(positions, dtype=float)
    targets = np.asarray(targets, dtype=float)
    order = np.random.default_rng(seed).permutation(len(positions))
    n_validation = max(1, int(round(validation_fraction * len(positions))))
    validation, train = order[:n_validation], order[n_validation:]
    n_features = 3 * (positions.shape[1] - 1)
    best = None
    for degree in degrees:
        n_terms = count_terms(n_features, degree)
        if max_terms is not None and n_terms > max_terms:
            continue
        for alpha in alphas:
            model = TaylorBaseline(degree, alpha).fit(positions[train], targets[train], cell)
            mae = float(np.abs(model.predict(positions[validation]) - targets[validation]).mean())
            if best is None or mae < best[0]:
                best = (mae, degree, alpha)
    return best[1], best[2]
