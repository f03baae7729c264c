"""Fitting the PCA-MLP committee: PCA bases, standardizations, quadratic parts, the stress slopes of F, the nets.

`fit_pcamlp` is the one fit (the benchmarks, the tests and `train_from_dataset`, the training entry point's
hook, call it); how it trains is a `FitSettings` (`training_loop.py`).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ...physics.stress import VOIGT_PAIRS, cauchy_stress_map, voigt_to_tensor
from .. import checkpoint
from ..common import standardization
from ..common import torch_threads
from .data import model_arrays, units
from .model import DEFAULT_FIELDS, DEFAULT_HEADS, PCAMLPCommittee, default_hyperparameters, save
from .network import quadratic_feature_gradients, quadratic_features
from .pca import fit_field_pca, pca_project
from .training_loop import FitSettings, Slopes, member_splits, train_stacked

#: below this std a standardized column is left unscaled (a constant output)
MIN_STD = 1e-12


def stress_slopes(model: PCAMLPCommittee, deformations: np.ndarray, stress, weight: float,
                  stress_map: torch.Tensor | None = None) -> Slopes:
    """The `Slopes` of the F head from ABINIT's stress (N, 3, 3), in the model's standardized units.

    `stress_map`: `physics.stress.cauchy_stress_map` of the deformations, if the caller has it already.
    """
    if stress_map is None:
        stress_map = cauchy_stress_map(deformations)
    stress = np.asarray(stress, dtype=np.float64)
    voigt = np.stack([stress[:, i, j] for i, j in VOIGT_PAIRS], -1)
    scale = float(voigt.std()) or 1.0
    i = model.head_names.index('F')
    f_std = float(model.scalar_std[i, 0])
    jacobian = stress_map * f_std / model.input_std.double()[None, :, None] / scale
    return Slopes(i, jacobian.float(), torch.as_tensor(voigt / scale, dtype=torch.float32), weight)


def _fit_quadratic(x: torch.Tensor, y: torch.Tensor, slopes: Slopes | None = None, ridge: float = 1e-8) -> torch.Tensor:
    """Least-squares quadratic parts (G, 28, n_out) of standardized targets y (G, N, n_out) on inputs x (N, 6).

    With `slopes`, that group's first column is fitted to the values and the stress rows together, with
    the weights of the training loss (values 1/N, stress weight/(N n_v)).
    """
    features = quadratic_features(x)
    n = len(x)
    gram = features.T @ features / n + ridge * torch.eye(28, dtype=x.dtype)
    rhs = features.T @ y.double() / n  # (G, 28, n_out)
    weights = torch.linalg.solve(gram, rhs)
    if slopes is not None:
        rows = torch.einsum('npj,njv->nvp', quadratic_feature_gradients(x), slopes.jacobian.double()).reshape(-1, 28)
        scale = slopes.weight / (n * slopes.targets.shape[1])
        gram_f = gram + scale * rows.T @ rows
        rhs_f = rhs[slopes.group, :, :1] + scale * rows.T @ slopes.targets.double().reshape(-1, 1)
        weights[slopes.group, :, :1] = torch.linalg.solve(gram_f, rhs_f)
    return weights.float()


RESIDUAL_STD_FLOOR = 1e-3  # of the target's own std


def _to_residual(model: PCAMLPCommittee, group: str, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                 sizes: list[int], per_column: bool) -> torch.Tensor:
    """Store the quadratic parts (fitted to standardized y) in physical units and re-standardize the residual.

    Returns the standardized residual targets (G, N, n_out) the MLPs train on; the model's mean and std
    buffers become those of the residual, so that physical = mean + std · MLP + quadratic.
    """
    mean, std, quadratic = ((model.scalar_mean, model.scalar_std, model.scalar_quadratic) if group == 'scalars'
                            else (model.coef_mean, model.coef_std, model.field_quadratic))
    residual = (y.double() - quadratic_features(x) @ weights.double()) * std.double()[:, None, :]  # physical
    quadratic.copy_(weights * std[:, None, :])
    quadratic[:, 0, :] += mean
    out = torch.zeros_like(y)
    for i, size in enumerate(sizes):
        r_mean, r_std = standardization(residual[i, :, :size].numpy(), MIN_STD)
        # where the quadratic part is (nearly) exact, do not blow rounding noise up to unit variance
        r_std = np.maximum(r_std, RESIDUAL_STD_FLOOR * std[i, :size].double().numpy())
        if not per_column:  # one std for all coefficients of a field (the loss is then its reconstruction MSE)
            r_std = np.full_like(r_std, r_std.max())
        mean[i], std[i] = 0.0, 1.0
        mean[i, :size], std[i, :size] = torch.as_tensor(r_mean), torch.as_tensor(r_std)
        out[i, :, :size] = torch.as_tensor((residual[i, :, :size].numpy() - r_mean) / r_std)
    return out


def _quadratic_stress(model: PCAMLPCommittee, x: torch.Tensor, stress_map: torch.Tensor) -> np.ndarray:
    """Cauchy stress (N, 3, 3) of the quadratic part of F alone (physical units), at standardized inputs x
    (N, 6), with the `cauchy_stress_map` of those deformations: σ_v = Σ_m ∂F/∂D_m M[m, v]."""
    weights = model.scalar_quadratic[model.head_names.index('F'), :, 0].double()
    dfdd = torch.einsum('npj,p->nj', quadratic_feature_gradients(x), weights) / model.input_std.double()
    return voigt_to_tensor(torch.einsum('nm,nmv->nv', dfdd, stress_map)).numpy()


def fit_pcamlp(deformations, scalars: dict, fields: dict | None = None, hyperparameters: dict | None = None, *,
               stress=None, settings: FitSettings | None = None, log: Callable[[str], None] | None = None,
               parent: PCAMLPCommittee | None = None):
    """Fit PCA bases, standardizations and the committee; returns (model, history).

    deformations: (N, 6); scalars: head name -> (N,) or (N, n_out) arrays (heads absent from
    `scalars` are dropped); fields: name -> (N, n1, n2, n3). hyperparameters: the model's
    (`model.default_hyperparameters`); settings: how it trains (`FitSettings`, defaults when None). All heads x
    members train as one stacked net, all fields x members as another. `log`: a callable taking a line.

    stress: ABINIT's Cauchy stress (N, 3, 3), Ha/Bohr³, of the relaxed cells. With it the F head is
    also fitted to σ through its derivative with respect to D (`Slopes`, `settings.stress_weight`): six more
    numbers per configuration, the same energy surface. Its members' F and σ are then consistent.

    parent: a committee fitted before (the last active-learning round's) to warm-start from: the PCA bases,
    standardizations and quadratic parts are fitted on these data as always; each net whose layers match the
    parent's in shape starts from its weights and trains with `settings.warm()`'s schedule.
    """
    settings = settings or FitSettings()
    with torch_threads(settings.threads):
        return _fit(deformations, scalars, fields, hyperparameters, stress, settings, log, parent)


def _fit(deformations, scalars, fields, hyperparameters, stress, settings: FitSettings, log, parent):
    seed, stress_weight = settings.seed, settings.stress_weight
    t_start, cpu_start = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fields = fields or {}
    hyper = default_hyperparameters(**(hyperparameters or {}))
    hyper['heads'] = {name: n for name, n in hyper['heads'].items() if name in scalars}
    hyper['fields'] = [name for name in hyper['fields'] if name in fields]
    hyper['pca_dims'] = {}
    d_in = np.asarray(deformations, dtype=np.float64)
    n = len(d_in)
    targets = {}
    for name in hyper['heads']:
        y = np.asarray(scalars[name], dtype=np.float64).reshape(n, -1)
        hyper['heads'][name] = y.shape[1]
        targets[name] = y
    pca = {}
    t_pca, cpu_pca = time.perf_counter(), time.process_time()
    for name in hyper['fields']:
        f = np.asarray(fields[name])
        hyper['field_shape'] = list(f.shape[1:])
        mean, components, ratio = fit_field_pca(f, hyper['pca_components'], seed=seed)
        pca[name] = (mean, components, ratio)
        hyper['pca_dims'][name] = int(len(components))
        targets[f'field:{name}'] = pca_project(f, mean, components)
    pca_seconds, pca_cpu_seconds = time.perf_counter() - t_pca, time.process_time() - cpu_pca
    model = PCAMLPCommittee(hyper, seed=seed)

    mean, std = standardization(d_in, MIN_STD)
    model.input_mean.copy_(torch.as_tensor(mean))
    model.input_std.copy_(torch.as_tensor(std))
    y_scalars = torch.zeros(len(model.head_names), n, model.scalar_mean.shape[1])
    for i, name in enumerate(model.head_names):
        mean, std = standardization(targets[name], MIN_STD)
        model.scalar_mean[i, :len(mean)] = torch.as_tensor(mean)
        model.scalar_std[i, :len(std)] = torch.as_tensor(std)
        y_scalars[i, :, :len(mean)] = torch.as_tensor((targets[name] - mean) / std)
    y_fields = torch.zeros(len(model.field_names), n, model.coef_mean.shape[1])
    for i, name in enumerate(model.field_names):
        m, comps, _ = pca[name]
        getattr(model, f'{name}_pca_mean').copy_(torch.as_tensor(m))
        getattr(model, f'{name}_pca_components').copy_(torch.as_tensor(comps))
        c = targets[f'field:{name}']
        c_mean, c_std = standardization(c, MIN_STD)
        if hyper['coefficient_scaling'] == 'field':
            c_std = np.full_like(c_std, c_std.max())
        model.coef_mean[i, :len(c_mean)] = torch.as_tensor(c_mean)
        model.coef_std[i, :len(c_std)] = torch.as_tensor(c_std)
        y_fields[i, :, :len(c_mean)] = torch.as_tensor((c - c_mean) / c_std)

    warm = {net: parent is not None and _warm_start(model, parent, net) for net in ('scalar_net', 'field_net')}
    if log and parent is not None:
        log(f'warm start from the parent model: {", ".join(n for n, done in warm.items() if done) or "no net matches"}')
    x_all = model._inputs(d_in).float()
    splits = member_splits(n, hyper['n_members'], settings.bootstrap, settings.val_fraction, rng)
    history = {'pca_seconds': pca_seconds, 'pca_cpu_seconds': pca_cpu_seconds,
               'pca_explained_variance': {name: float(pca[name][2].sum()) for name in pca}}
    slopes = None
    if stress is not None and 'F' in model.head_names and stress_weight > 0:
        stress_map = cauchy_stress_map(d_in)
        slopes = stress_slopes(model, d_in, stress, stress_weight, stress_map)
        history['stress_weight'] = float(stress_weight)
    if hyper['quadratic']:  # the MLPs then learn the residual of the quadratic parts, at unit variance
        x64 = x_all.double()
        with torch.no_grad():
            weights = _fit_quadratic(x64, y_scalars, slopes)
            y_scalars = _to_residual(model, 'scalars', x64, y_scalars, weights, model.head_sizes, per_column=True)
            if slopes is not None:
                x_exact = (torch.as_tensor(d_in) - model.input_mean.double()) / model.input_std.double()
                residual_stress = stress - _quadratic_stress(model, x_exact, stress_map)
                slopes = stress_slopes(model, d_in, residual_stress, stress_weight, stress_map)
            weights = _fit_quadratic(x64, y_fields)
            y_fields = _to_residual(model, 'fields', x64, y_fields, weights, model.field_dims,
                                    per_column=hyper['coefficient_scaling'] != 'field')
    history['warm_start'] = {net: bool(done) for net, done in warm.items()}
    if model.head_names:
        run = settings.warm() if warm['scalar_net'] else settings
        history['scalars'] = train_stacked(model.scalar_net, x_all, y_scalars, model.output_mask('scalars'), splits,
                                           run, epochs=run.epochs, lbfgs_iterations=run.lbfgs_iterations,
                                           batch_size=run.batch_size, rng=rng, log=log, label='scalars',
                                           group_names=model.head_names, slopes=slopes, warm=warm['scalar_net'])
    if model.field_names:
        run = settings.warm() if warm['field_net'] else settings
        history['fields'] = train_stacked(model.field_net, x_all, y_fields, model.output_mask('fields'), splits,
                                          run, epochs=run.field_epochs, lbfgs_iterations=run.field_lbfgs_iterations,
                                          batch_size=run.field_batch_size or run.batch_size, rng=rng,
                                          log=log, label='fields', group_names=model.field_names, warm=warm['field_net'])
    history['train_seconds'] = time.perf_counter() - t_start
    # CPU time of the process: a fairer measure than wall time on a machine shared with other jobs
    history['train_cpu_seconds'] = time.process_time() - cpu_start
    model.eval()
    return model, history


def _warm_start(model: PCAMLPCommittee, parent: PCAMLPCommittee, net: str) -> bool:
    """Copy the parent's hidden layers of `net` ('scalar_net' or 'field_net') into `model` where the net stacks the
    same heads or fields and its hidden layers have the same shapes; True if copied. The output layer is left:
    the targets (standardization, quadratic part, PCA basis) are refitted, so `train_stacked(warm=True)` solves
    it first."""
    names = 'head_names' if net == 'scalar_net' else 'field_names'
    mine, theirs = getattr(model, net), getattr(parent, net)
    if getattr(model, names) != getattr(parent, names) or len(mine.weights) != len(theirs.weights):
        return False
    pairs = list(zip([*mine.weights[:-1], *mine.biases[:-1]], [*theirs.weights[:-1], *theirs.biases[:-1]]))
    if not pairs or any(a.shape != b.shape for a, b in pairs):
        return False
    with torch.no_grad():
        for a, b in pairs:
            a.copy_(b)
    return True


def train_from_dataset(arrays: dict, attributes: dict, hyperparameters: dict, model_path, log=print, parent=None):
    """The training entry point's hook (`ml.registry`): fit a committee on the columns of an 'mg_strain'
    dataset (the F head also on the stress) and write it to `model_path`.

    `hyperparameters`: the model's under 'hyperparameters', the rest `FitSettings` fields (epochs, l2, ...).
    `parent`: a 'pcamlp' model file to warm-start from (`fit_pcamlp`).
    """
    values = dict(hyperparameters or {})
    hyper = values.pop('hyperparameters', {})
    settings = FitSettings.from_dict(values)
    named = model_arrays(arrays)
    scalars = {name: named[name] for name in DEFAULT_HEADS if name in named}
    fields = {name: named[name] for name in DEFAULT_FIELDS if name in named}
    parent_model = checkpoint.load(parent)[0] if parent is not None else None
    model, history = fit_pcamlp(named['D'], scalars, fields, hyper, stress=named.get('stress'), settings=settings,
                                log=log, parent=parent_model)
    metadata = {'inputs': 'D = (λa, λb, λc, θa, θb, θc), angles in degrees',
                'units': units([*model.head_names, *model.field_names]),
                'n_train': int(len(named['D'])), 'train_seconds': history['train_seconds'],
                'train_cpu_seconds': history['train_cpu_seconds'], 'warm_start': history['warm_start'],
                'settings': {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}}
    save(model_path, model, metadata=metadata, history=history)
    return model, history
