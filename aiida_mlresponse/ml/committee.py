"""A committee of K radnet models: different seeds and resamples; mean and spread of predictions.

`fit_committee` is the one high-level fit (used by the training entry point and benchmarks/radnet_accuracy.py):
positions, cell, numbers and targets in, a trained `Committee` and one `training.TrainingResult` per member
out; every choice is in its JSON-able ``hyperparameters`` (``DEFAULT_FIT_HYPERPARAMETERS``, documented there),
stored in ``committee.hyperparameters['fit']`` so the checkpoint records them.

How a committee is fitted (with the default Taylor head):
1. Head: the ridge Taylor polynomial of `baselines.py` (degree and ridge chosen on a held-out part of the
   training data, ridge on the nonlinear terms only), fitted on all the training configurations and shared by
   every member, frozen. With no CNN correction the committee *is* that baseline.
2. Residuals: out-of-fold residuals of the head (K-fold: each configuration's residual comes from a head fitted
   without it). A high-degree head nearly interpolates its own training data, so in-sample residuals would
   teach the CNN nothing; out-of-fold residuals are the errors the head makes on unseen configurations.
3. Members: member k draws its own split (``resampling='split'``: a random (1 - holdout) part to train on, the
   rest to early-stop on; or ``'bootstrap'`` with out-of-bag validation) and its own initialization, and trains
   a CNN on the residuals, starting from a zero output (epoch 0 = the head alone).
4. Shrinkage: the member's CNN correction c is weighted per component by w in [0, 1], the least-squares weight
   of c against the residual on the member's validation configurations: a CNN that does not help on
   configurations it never trained on gets w ≈ 0 and the member falls back to the head.

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

from .baselines import TaylorBaseline, count_terms, select_degree
from .datasets import TARGETS, tensor_to_voigt
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


def shrink_correction(model: RadNet, cubes: torch.Tensor, residual, indices) -> np.ndarray:
    """Set ``model.residual_weight`` to the least-squares weight in [0, 1] of its correction against `residual`.

    Per component: w = clip(<r, c> / <c, c>, 0, 1) over the configurations `indices` (the member's validation
    set, which its CNN never trained on). Returns w.
    """
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    with torch.no_grad():
        correction = torch.cat([model.correction(cubes[chunk].to(model.dtype)) for chunk in indices.split(256)]).numpy()
    residual = np.asarray(residual, dtype=float)[indices.numpy()]
    denominator = (correction * correction).sum(axis=0)
    weight = np.where(denominator > 0, (residual * correction).sum(axis=0) / np.where(denominator > 0, denominator, 1),
                      0.0)
    weight = np.clip(weight, 0.0, 1.0)
    with torch.no_grad():
        model.residual_weight.copy_(torch.as_tensor(weight))
    return weight


def train_member(model: RadNet, cubes: torch.Tensor, residual: np.ndarray, train_indices, validation_indices,
                 config: TrainingConfig, log=print, description=''):
    """Fit one RadNet's CNN in place on cubes (M, N, 1, n, n, n) and the targets left to it, `residual` (M, K).

    The model's Taylor head, if any, is set by the caller; `residual` is then what the head leaves.
    """
    residual = np.asarray(residual, dtype=float)
    if model.taylor is not None:
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

    With ``member_hyperparameters['taylor'] = {'degree': d, 'n_atoms': N, 'alpha': a}`` the shared head is
    fitted here (`fit_head`, `folds` out-of-fold residuals) and, when `shrink`, each member's correction is
    weighted on its validation set (`shrink_correction`). Without a head the CNN learns the targets themselves
    and is not shrunk. Returns (committee, results): one `training.TrainingResult` per member, whose
    ``summary`` holds the member's validation MAE with and without its CNN and its weights w.
    """
    config = config or TrainingConfig()
    member_hp = complete_hyperparameters(member_hyperparameters)
    density = dict(density or DEFAULT_DENSITY)
    targets = np.asarray(targets, dtype=float)
    committee = Committee({'n_members': n_members, 'member': member_hp, 'density': density, 'target': target,
                           'resampling': resampling, 'training': config.as_dict(), 'seed': seed})
    head, residual = None, targets
    if member_hp['taylor']:
        taylor = member_hp['taylor']
        head, residual = fit_head(positions, targets, cell, taylor['degree'], taylor.get('alpha', 1e-10), folds, seed)
        if log:
            log(f'Taylor head degree {head.degree} alpha {head.alpha:g}: out-of-fold MAE '
                f'{np.abs(residual).mean():.4e} ({folds} folds)')
    results = []
    for k, member in enumerate(committee.members):
        member_seed = seed + 1000 * k
        torch.manual_seed(member_seed)
        fresh = RadNet(member_hp)  # its own initialization from the member's seed
        member.load_state_dict(fresh.state_dict())
        if head is not None:
            member.taylor.set_from(head)
        train_indices, validation_indices = resample(len(targets), member_seed, resampling, holdout)
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
        if head is not None and shrink:
            weight = shrink_correction(member, cubes, residual, validation_indices)
            summary['residual_weight'] = weight.tolist()
            summary['validation_mae'] = float(np.abs(residual[validation_indices] - weight * correction).mean())
        else:
            summary['validation_mae'] = summary['validation_mae_unshrunk']
        result.summary.update(summary)
        results.append(result)
        if log:
            weights = f', CNN weight {", ".join(f"{w:.2f}" for w in summary["residual_weight"])}' \
                if 'residual_weight' in summary else ''
            log(f'{description}best validation loss {result.best_validation_loss:.4e} at epoch {result.best_epoch}; '
                f'validation MAE head {summary["validation_mae_head"]:.4e}, with CNN '
                f'{summary["validation_mae_unshrunk"]:.4e}, shrunk {summary["validation_mae"]:.4e}{weights}; '
                f'{time.perf_counter() - start:.1f} s')
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
    'head': {'degrees': [1, 2, 3, 4, 5, 6, 7], 'alphas': [1e-10, 1e-8, 1e-6, 1e-4, 1e-2], 'max_terms': 1200,
             'selection_fraction': 0.25, 'folds': 5},
    # Shrink each member's CNN correction toward 0 by its least-squares weight on its validation set.
    'shrink': True,
    # training.TrainingConfig fields (seed comes from the member).
    'training': {'epochs': 50, 'batch_size': 32, 'learning_rate': 2e-3, 'weight_decay': 0.0, 'patience': 20,
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
        head = hp['head']
        if count_terms(3 * (len(numbers) - 1), min(head['degrees'])) > head['max_terms']:
            raise ValueError(f'even a degree-{min(head["degrees"])} Taylor head of {len(numbers)} atoms has more than '
                             f'max_terms={head["max_terms"]} terms: raise head.max_terms or set head to None')
        degree, alpha = select_degree(positions, targets, cell, degrees=tuple(head['degrees']),
                                      alphas=tuple(head['alphas']), validation_fraction=head['selection_fraction'],
                                      seed=seed, max_terms=head['max_terms'])
        chosen_head = {'degree': int(degree), 'alpha': float(alpha)}
        member['taylor'] = {'degree': int(degree), 'n_atoms': len(numbers), 'alpha': float(alpha)}
    config = TrainingConfig(**hp['training'], seed=seed)
    committee, results = train_committee(
        cubes, positions, targets, cell, n_members=n_members, member_hyperparameters=member, density=density,
        config=config, resampling=hp['resampling'], holdout=hp['holdout'], target=target, log=log, seed=seed,
        folds=hp['head']['folds'] if hp['head'] is not None else 0, shrink=bool(hp['shrink']))
    committee.hyperparameters['fit'] = dict(hp, chosen_head=chosen_head)
    return committee, results
