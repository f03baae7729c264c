"""A committee of K radnet models: different seeds and bootstrap samples; mean and spread of predictions.

Member k draws a bootstrap sample (with replacement) of the training configurations with its own seed,
trains on it and early-stops on its out-of-bag configurations (``resampling='bootstrap'``). With
``resampling='split'`` a member instead trains on a random (1 - holdout) part and early-stops on the rest,
which keeps more distinct configurations per member; both give members that disagree where data are thin.

With ``taylor_degree`` each member first fits the ridge Taylor polynomial (`baselines.py`) on its own
sample, freezes it as a head and trains its CNN on the residual, starting from a zero output (so at epoch
0 the member *is* its baseline and early stopping never keeps a worse validation loss than the baseline).

The committee is one `torch.nn.Module` (``kind = 'radnet_committee'``) whose state is tensors and whose
``hyperparameters`` are JSON-able, saved with `checkpoint.save`.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from .baselines import TaylorBaseline
from .density import AtomCubes
from .radnet import RadNet, complete_hyperparameters, standardize
from .training import TrainingConfig, train

KIND = 'radnet_committee'

DEFAULT_DENSITY = {'n': 9, 'spacing': 0.875, 'sigma': 1.0, 'window_radius': 3.5, 'window_width': 0.5}


def atom_cubes_from(density: dict, dtype=torch.float32) -> AtomCubes:
    """The `density.AtomCubes` described by a committee's ``density`` hyperparameters (Bohr)."""
    return AtomCubes(dtype=dtype, **density)


class Committee(nn.Module):
    """K RadNet members; ``forward`` gives (K, B, n_outputs), ``predict`` the mean and the spread."""

    kind = KIND

    def __init__(self, hyperparameters: dict):
        super().__init__()
        hp = copy.deepcopy(hyperparameters)
        hp['member'] = complete_hyperparameters(hp['member'])
        hp.setdefault('density', dict(DEFAULT_DENSITY))
        hp.setdefault('target', None)
        if hp['density']['n'] != hp['member']['cube_size']:
            raise ValueError('the density cube size and the network cube_size differ')
        self.hyperparameters = hp
        self.members = nn.ModuleList(RadNet(hp['member']) for _ in range(hp['n_members']))

    def __len__(self):
        return len(self.members)

    def atom_cubes(self, dtype=None) -> AtomCubes:
        return atom_cubes_from(self.hyperparameters['density'], dtype or self.members[0].dtype)

    def forward(self, cubes: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([member(cubes, positions) for member in self.members])

    def predict(self, cubes, positions=None):
        """(mean, spread): the members' mean and standard deviation (ddof 1), (B, n_outputs) float64."""
        values = self(cubes, positions)
        spread = values.std(dim=0) if len(self.members) > 1 else torch.zeros_like(values[0])
        return values.mean(dim=0), spread

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
        the reference positions (valid within skin/2 of them) and the Taylor head, if any, is included.
        """
        atom_cubes = self.atom_cubes(torch.float64)
        neighbours = atom_cubes.neighbours(reference_positions, cell, skin=skin)
        members = list(self.members) if member is None else [self.members[member]]

        def function(positions):
            positions = torch.as_tensor(positions, dtype=torch.float64)
            cubes = atom_cubes.evaluate(positions, cell, numbers, neighbours)
            values = [m(cubes.unsqueeze(0), positions.unsqueeze(0))[0] for m in members]
            return torch.stack(values).mean(dim=0)

        return function


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


def train_member(model: RadNet, cubes: torch.Tensor, positions: np.ndarray, targets: np.ndarray, cell,
                 train_indices, validation_indices, config: TrainingConfig, log=print, description=''):
    """Fit one RadNet in place on cubes (M, N, 1, n, n, n), positions (M, N, 3) Bohr, targets (M, K)."""
    positions = np.asarray(positions, dtype=float)
    targets = np.asarray(targets, dtype=float)
    residual = targets.copy()
    if model.taylor is not None:
        baseline = TaylorBaseline(model.taylor.degree, model.hyperparameters['taylor'].get('alpha', 1e-10))
        baseline.fit(positions[train_indices], targets[train_indices], cell)
        model.taylor.set_from(baseline)
        residual = targets - baseline.predict(positions)
        model.zero_output_()
    mean, std = standardize(residual[train_indices])
    with torch.no_grad():
        model.output_offset.copy_(torch.as_tensor(mean))
        model.output_scale.copy_(torch.as_tensor(std))
    model.set_input_standardization(cubes[torch.as_tensor(np.unique(train_indices))])
    normalized = torch.as_tensor((residual - mean) / std, dtype=model.dtype)
    model_cubes = cubes.to(model.dtype)

    def loss(member, indices):
        return torch.mean((member.normalized(model_cubes[indices]) - normalized[indices]) ** 2)

    return train(model, loss, train_indices, validation_indices, config, log=log, description=description)


def train_committee(cubes: torch.Tensor, positions, targets, cell, n_members: int = 4,
                    member_hyperparameters: dict | None = None, density: dict | None = None,
                    config: TrainingConfig | None = None, resampling: str = 'bootstrap', holdout: float = 0.2,
                    target: str | None = None, log=print, seed: int = 0):
    """Train a committee on all the configurations given (the caller keeps its own test set apart).

    Returns (committee, results): one `training.TrainingResult` per member (curves for the checkpoint).
    """
    config = config or TrainingConfig()
    member_hp = complete_hyperparameters(member_hyperparameters)
    density = dict(density or DEFAULT_DENSITY)
    committee = Committee({'n_members': n_members, 'member': member_hp, 'density': density, 'target': target,
                           'resampling': resampling, 'training': config.as_dict(), 'seed': seed})
    results = []
    for k, member in enumerate(committee.members):
        member_seed = seed + 1000 * k
        torch.manual_seed(member_seed)
        fresh = RadNet(member_hp)  # its own initialization from the member's seed
        member.load_state_dict(fresh.state_dict())
        train_indices, validation_indices = resample(len(targets), member_seed, resampling, holdout)
        member_config = copy.copy(config)
        member_config.seed = member_seed
        start = time.perf_counter()
        results.append(train_member(member, cubes, positions, targets, cell, train_indices, validation_indices,
                                    member_config, log=log, description=f'[member {k + 1}/{n_members}] '))
        if log:
            log(f'[member {k + 1}/{n_members}] best validation {results[-1].best_validation_loss:.4e} '
                f'at epoch {results[-1].best_epoch}, {time.perf_counter() - start:.1f} s')
    return committee, results
