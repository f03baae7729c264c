"""How a radnet committee is fitted: different seeds and resamples, closed-form heads, CNNs on their residuals.

`fit_committee` is the one high-level fit (used by `train_from_dataset`, the training entry point's hook, and
benchmarks/radnet_accuracy.py): positions, cell, numbers and targets in, a trained `Committee` and one
`training_loop.TrainingResult` per member out; every choice is in its JSON-able ``hyperparameters``
(``DEFAULT_FIT_HYPERPARAMETERS``, documented there), stored in ``committee.hyperparameters['fit']`` so the
checkpoint records them.

How a committee is fitted (default hyperparameters):
1. Head choice (`select_heads`, on a held-out quarter of the training data): the ridge Taylor polynomial of
   `taylor.py` (ridge on its nonlinear terms only), or the cube polynomial (`heads.CubePolynomial`: a sum
   over atoms of a quadratic in the leading principal components of each atom's cube) alone or jointly with the
   linear Taylor terms; the lowest held-out MAE wins. With no CNN correction a member *is* that head.
2. Members: member k draws its own bootstrap resample (``resampling='bootstrap'``, out-of-bag validation; or
   ``'split'``: a random (1 - holdout) part to train on, the rest to validate on) and fits the chosen heads on it,
   frozen (`heads.fit_heads`, closed form); with ``head.shared_projection`` every cube polynomial projects on the
   principal directions of all the configurations' cubes. By default (``cnn`` False) a member *is* its heads
   and steps 3 and 4 are skipped: 32 bootstrap members scatter as the fit would over data sets, which 3 members on
   80 % splits did not (14-66 % of held-out errors within their 2σ, benchmarks/active_learning.py); 32 rather
   than 8 so the spread's own sampling noise does not drown its ranking (see ``n_members``).
3. Its CNN learns the out-of-fold residuals of the heads on its training part (K-fold: a high-degree head nearly
   interpolates its own training data, so in-sample residuals would teach the CNN nothing), starting from a
   zero output, with early stopping on the true residuals of its validation part.
4. Shrinkage: the CNN correction c is weighted per component by w in [0, 1], the least-squares weight of c
   against the residual on the member's validation part: a CNN that does not help on configurations it never
   trained on gets w ≈ 0 and the member falls back to its heads.
5. Central heads: the same heads fitted once more on all the training data. The committee mean is these plus
   the members' mean (shrunk) CNN correction; the spread is the members' standard deviation, each member with
   its own heads and CNN (the members estimate the variance of the fit, the central heads are its best value).
6. Spread calibration (``coverage``, `calibration.py`): sqrt((a σ)² + b²) per component, fitted on the central
   heads' out-of-fold residuals; `model_metadata` puts it in the model file's metadata, where
   `predict.predict_response` finds it.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from .. import checkpoint
from ..common import standardization, tensor_to_voigt
from .committee import DEFAULT_DENSITY, Committee, atom_cubes_from
from .hdf5 import TARGETS, RadnetDataset
from .calibration import fit_spread_calibration
from .heads import fit_heads, fit_projection, select_heads
from .network import RadNet, complete_hyperparameters
from .training_loop import TrainingConfig, TrainingResult, train


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


def committee_spread(committee: Committee, cubes: torch.Tensor, positions, chunk: int = 256) -> np.ndarray:
    """The members' standard deviation (n, n_outputs) on the given configurations' cubes."""
    spreads = []
    with torch.no_grad():
        for start in range(0, len(cubes), chunk):
            rows = slice(start, start + chunk)
            spreads.append(committee.predict(cubes[rows], torch.as_tensor(np.asarray(positions)[rows]))[1].numpy())
    return np.concatenate(spreads)


def train_member(model: RadNet, cubes: torch.Tensor, residual: np.ndarray, train_indices, validation_indices,
                 config: TrainingConfig, log=print, description=''):
    """Fit one RadNet's CNN in place on cubes (M, N, 1, n, n, n) and the targets left to it, `residual` (M, K).

    The model's Taylor head, if any, is set by the caller; `residual` is then what the head leaves.
    """
    residual = np.asarray(residual, dtype=float)
    if model.taylor is not None or model.polynomial is not None:
        model.zero_output_()
    mean, std = standardization(residual[train_indices])
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
                    target: str | None = None, log=print, seed: int = 0, folds: int = 5, shrink: bool = True,
                    cnn: bool = True, shared_projection: bool = False, coverage: float | None = None,
                    parent: Committee | None = None):
    """Train a committee on all the configurations given (the caller keeps its own test set apart).

    With ``member_hyperparameters['taylor'] = {'degree': d, 'n_atoms': N, 'alpha': a}`` and/or
    ``['polynomial'] = {'components': k, 'alpha': a}`` each member fits these frozen heads jointly on its own
    training part (`heads.fit_heads`, `folds` out-of-fold residuals for its CNN) and, when `shrink`, its CNN correction
    is weighted on its validation part (`shrink_correction`); the committee's central heads are fitted on all
    the configurations (the heads of its mean). Without heads the CNN learns the targets themselves
    and is not shrunk. Returns (committee, results): one `training_loop.TrainingResult` per member, whose
    ``summary`` holds the member's validation MAE with and without its CNN and its weights w.

    Without `cnn` the members are their heads (no CNN trained, weights 0: `Committee` then never evaluates a CNN).
    With `shared_projection` every cube polynomial (central and members') projects on the principal directions
    of all the configurations' cubes, so a prediction projects each cube once; members then differ by their
    coefficients only. With `coverage` (needs heads), ``committee.hyperparameters['spread_calibration']`` holds
    `calibration.fit_spread_calibration` of the central heads' out-of-fold residuals against the members' spread.
    With a `parent` committee (a previous round's), member k's CNN starts from the parent's member k wherever a
    tensor has the same shape (heads, standardizations and the output layer are set again from these data).
    """
    config = config or TrainingConfig()
    member_hp = complete_hyperparameters(member_hyperparameters)
    density = dict(density or DEFAULT_DENSITY)
    targets = np.asarray(targets, dtype=float)
    positions = np.asarray(positions, dtype=float)
    with_heads = bool(member_hp['taylor'] or member_hp['polynomial'])
    if not (cnn or with_heads):
        raise ValueError('a committee without CNN needs heads (Taylor or cube polynomial)')
    principal = None
    if shared_projection and member_hp['polynomial']:
        principal = fit_projection(cubes, member_hp['polynomial']['components'], targets.shape[1])
    committee = Committee({'n_members': n_members, 'member': member_hp, 'density': density, 'target': target,
                           'resampling': resampling, 'training': config.as_dict(), 'seed': seed,
                           'central': with_heads})
    if with_heads:
        # The heads of the committee mean, fitted on all the configurations (see `Committee`), and their
        # out-of-fold residuals, against which the members' mean correction is weighted below.
        head, polynomial, central_residual = fit_heads(positions, cubes, targets, cell, member_hp['taylor'],
                                                       member_hp['polynomial'], folds, seed, projection=principal)
        committee.central.set_from(head, polynomial)
        held_out_correction = np.zeros_like(targets)
        held_out_count = np.zeros(len(targets))
    results = []
    for k, member in enumerate(committee.members):
        member_seed = seed + 1000 * k
        torch.manual_seed(member_seed)
        fresh = RadNet(member_hp).state_dict()  # its own initialization from the member's seed
        if parent is not None and k < len(parent.members):
            fresh.update({name: value for name, value in parent.members[k].state_dict().items()
                          if name in fresh and value.shape == fresh[name].shape})
        member.load_state_dict(fresh)
        train_indices, validation_indices = resample(len(targets), member_seed, resampling, holdout)
        residual = targets
        if with_heads:
            # The member's own heads, fitted on its training part: out-of-fold residuals there, true held-out
            # residuals on its validation part (so members differ where the heads are uncertain).
            head, polynomial, train_residual = fit_heads(
                positions[train_indices], cubes[train_indices], targets[train_indices], cell, member_hp['taylor'],
                member_hp['polynomial'], folds if cnn else 0, member_seed, projection=principal)
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
        if not cnn:  # the member is its heads, and so is the mean
            with torch.no_grad():
                member.residual_weight.zero_()
                committee.central.correction_weight.zero_()
            results.append(TrainingResult(-1, float('nan'), [], False, 0.0, {
                'validation_mae_head': float(np.abs(residual[validation_indices]).mean())}))
            continue
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
    if with_heads and coverage is not None:
        spread = committee_spread(committee, cubes, positions)
        committee.hyperparameters['spread_calibration'] = fit_spread_calibration(central_residual, spread, coverage)
        if log:
            calibration = committee.hyperparameters['spread_calibration']
            log(f'spread calibration on {len(targets)} out-of-fold residuals: scale '
                f'{", ".join(f"{a:.3g}" for a in calibration["scale"])}, floor '
                f'{", ".join(f"{b:.3g}" for b in calibration["floor"])}')
    if with_heads and cnn:
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
    # Members: each a bootstrap resample of the configurations with its own heads (what makes them disagree where
    # the data are thin); 'split': train on 1 - holdout, validate on holdout (before 2026-11: 3 split members).
    # 32, not 8: the standard deviation of 8 draws is itself ~27 % noisy, which scrambled the spread's ranking
    # where the true error scale varies little (BN P, box Spearman 0.16 with 8, 0.26 with 32, 0.27 with 64); the
    # mean (central heads) does not change, and the heads of the members cost ~15 % of a BN pool's scoring time.
    'n_members': 32,
    'resampling': 'bootstrap',
    'holdout': 0.2,
    # Train each member's CNN correction on its heads' residuals. False: the members are their heads (the CNN's
    # out-of-bag weight was 0 on all four radnet tasks, benchmarks/active_learning.py), ~10x faster to fit and
    # to predict.
    'cnn': False,
    # Calibrate the spread (`calibration.py`): this fraction of the out-of-fold errors within 2 calibrated σ
    # (None: the members' standard deviation as it is).
    'coverage': 0.9,
    # The per-atom CNN (network.complete_hyperparameters: preset tiny/light/paper, cube_size, linear_head, dtype).
    'member': {'preset': 'tiny', 'cube_size': 9, 'linear_head': True, 'dtype': 'float32'},
    # Density cubes (Bohr; the number of voxels per edge is member.cube_size).
    'density': {key: value for key, value in DEFAULT_DENSITY.items() if key != 'n'},
    # Taylor head: degree and ridge chosen among these on a held-out `selection_fraction` of the training data,
    # polynomials with more than `max_terms` terms skipped; `folds` for the out-of-fold residuals. None: no head
    # (the paper's formulation: the CNN learns the targets themselves).
    # Cube polynomial (heads.CubePolynomial): a quadratic in k principal components of each atom's cube, alone
    # or jointly with the linear Taylor terms, k in `components` and ridge in `polynomial_alphas`; the candidate
    # with the lowest held-out MAE is the head ([] for components: Taylor heads only).
    'head': {'degrees': [1, 2, 3, 4, 5, 6, 7], 'alphas': [1e-10, 1e-8, 1e-6, 1e-4, 1e-2], 'max_terms': 1200,
             'components': [20, 40], 'polynomial_alphas': [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
             'selection_fraction': 0.25, 'folds': 5,
             # one projection of the cubes (all the configurations') for the central and every member's polynomial
             'shared_projection': True},
    # Shrink each member's CNN correction toward 0 by its least-squares weight on its validation set.
    'shrink': True,
    # training_loop.TrainingConfig fields (seed comes from the member).
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
                  seed: int = 0, cubes: torch.Tensor | None = None, parent: Committee | None = None):
    """Fit a radnet committee to configurations of one cell; the whole recipe is in `hyperparameters`.

    positions (n, N, 3) Bohr, cell (3, 3) Bohr (rows), numbers (N,), targets (n, 3) P in e/Bohr² (branch
    fixed) for ``target='polarization'`` or (n, 6) Voigt ε∞ (`dielectric_targets`) for ``'dielectric'``.
    hyperparameters: overrides of DEFAULT_FIT_HYPERPARAMETERS. log: callable taking a line (None: silent).
    cubes: the density cubes of `positions` if already made (must match the density hyperparameters).
    parent: a committee to warm-start the members' CNNs from (`train_committee`; nothing to start without `cnn`).

    Returns (committee, results): ``committee.hyperparameters['fit']`` holds the completed hyperparameters and
    the head chosen; results[k] is member k's `training_loop.TrainingResult` (``curve_arrays()`` for checkpoints,
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
        folds=hp['head']['folds'] if hp['head'] is not None else 0, shrink=bool(hp['shrink']), cnn=bool(hp['cnn']),
        shared_projection=bool(hp['head'] and hp['head']['shared_projection']), coverage=hp['coverage'], parent=parent)
    committee.hyperparameters['fit'] = dict(hp, chosen_head=chosen_head)
    return committee, results


def train_from_dataset(arrays: dict, attributes: dict, hyperparameters: dict, model_path, log=print, parent=None):
    """The training entry point's hook (`ml.registry`): fit a committee on the columns of a 'response' dataset
    (positions and cells in Å, P in e/Bohr², ε∞) and write it to `model_path`; `parent`: a 'radnet_committee'
    model file to warm-start the CNNs from (`fit_committee`)."""
    hyperparameters = dict(hyperparameters)
    target = hyperparameters.pop('target', 'polarization')
    seed = int(hyperparameters.pop('seed', 0))
    data = RadnetDataset.from_dataset(arrays, attributes)
    parent_committee = checkpoint.load(parent)[0] if parent is not None else None
    committee, results = fit_committee(data.positions, data.cell, data.numbers, data.targets(target), target,
                                       hyperparameters=hyperparameters, log=log, seed=seed, parent=parent_committee)
    metadata = model_metadata(committee, target, data.cell, data.numbers, len(data))
    curves = {f'member_{k}': result.curve_arrays() for k, result in enumerate(results)}
    checkpoint.save(model_path, committee, metadata=metadata, curves=curves)


def model_metadata(committee: Committee, target: str, cell, numbers, n_train: int) -> dict:
    """The metadata of a committee's model file, with the spread calibration of the fit (if any) moved into it
    from the committee's hyperparameters (`predict.predict_response` applies it)."""
    metadata = {
        'target': target,
        'units': {'positions': 'bohr', 'polarization': 'e/bohr^2', 'dielectric': 'dimensionless (Voigt xx yy zz yz xz xy)'}[
            'polarization' if target == 'polarization' else 'dielectric'],
        'cell_bohr': np.asarray(cell, dtype=float).tolist(), 'atomic_numbers': np.asarray(numbers).tolist(),
        'n_train': int(n_train),
    }
    calibration = committee.hyperparameters.pop('spread_calibration', None)
    if calibration is not None:
        metadata['spread_calibration'] = calibration
    return metadata
