"""PCA + MLP committee for the strained Mg cell (seed 002, METHODS.md part B).

Map D = (λa, λb, λc, θa, θb, θc) (angles in degrees, as in `physics.strain`) to
  - scalar outputs ("heads"): free energy F, band energy U, entropic energy -TS (Ha) and the relaxed
    parameters (R1, R2, R3) of the symmetric form, each by an MLP 50-100-50 tanh;
  - fields on one fixed grid (ρ, φ, u, s): PCA per field (scikit-learn, d = 50 by default, or the
    smallest d reaching a fraction of explained variance), an MLP 500-500 tanh for its coefficients,
    reconstruction by the PCA basis.
Inputs and outputs are standardized (zero mean, unit variance) as in the seed.

A committee of K members gives a mean and a spread for every output, fields included. The K members
are stored as stacked weights (K, n_in, n_out) and run as one batched matrix product, so a committee
costs one pass, not K, in training and in evaluation; each member has its own initialisation and its
own bootstrap sample, and keeps the weights of its lowest out-of-bag validation loss.

The model is a plain `torch.nn.Module` whose whole state is tensors (`state_dict`) plus a JSON-able
`hyperparameters` dict: it is saved and loaded by `ml.checkpoint` (kind 'pcamlp', weights-only).
"""

from __future__ import annotations

import copy
import math
import pathlib
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import checkpoint

KIND = 'pcamlp'
DEFAULT_HEADS = {'F': 1, 'U': 1, 'minus_TS': 1, 'R': 3}
DEFAULT_FIELDS = ('rho', 'phi', 'u', 's')


# ----------------------------------------------------------------------------------------------
# Reduction and standardization
# ----------------------------------------------------------------------------------------------


def fit_field_pca(samples: np.ndarray, n_components: int | float = 50, seed: int = 0):
    """PCA of one field over samples (N, n_points): (mean (n_points,), components (d, n_points), explained ratio).

    ``n_components`` an int is d; a float in (0, 1) picks the smallest d whose explained variance
    reaches that fraction (scikit-learn semantics). Computed in float64 for a clean basis.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if isinstance(n_components, int):
        n_components = min(n_components, x.shape[0], x.shape[1])
    pca = PCA(n_components=n_components, svd_solver='full', random_state=seed).fit(x)
    return pca.mean_, pca.components_, pca.explained_variance_ratio_


def pca_project(samples, mean, components):
    """Coefficients (N, d) of samples (N, ...) in an orthonormal PCA basis."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    return (x - mean) @ components.T


def pca_reconstruct(coefficients, mean, components):
    """Fields (N, n_points) from coefficients (N, d)."""
    return mean + np.asarray(coefficients) @ components


def standardization(values: np.ndarray, min_std: float = 1e-12):
    """Mean and standard deviation per column of (N, n) values; constant columns get std 1."""
    v = np.asarray(values, dtype=np.float64)
    mean, std = v.mean(axis=0), v.std(axis=0)
    return mean, np.where(std > min_std, std, 1.0)


def nrmse(predicted, true, axis=None):
    """RMSE divided by the range (max - min) of the truth, per sample over the grid (seed eq. 12).

    For arrays (N, ...) the result is (N,): one value per configuration.
    """
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    p, t = p.reshape(len(t), -1), t.reshape(len(t), -1)
    rmse = np.sqrt(np.mean((p - t) ** 2, axis=1))
    return rmse / (t.max(axis=1) - t.min(axis=1))


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class StackedMLP(nn.Module):
    """K independent MLPs with the same layer sizes, evaluated as one batched product.

    Input (B, n_in) (the same points for every member) or (K, B, n_in); output (K, B, n_out).
    tanh between layers, linear output; Glorot-uniform weights (the Keras default the seed used).
    """

    def __init__(self, n_members: int, sizes: list[int], generator: torch.Generator | None = None):
        super().__init__()
        self.n_members = n_members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / (n_in + n_out))
            w = (torch.rand(n_members, n_in, n_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n_members, 1, n_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
            if i < last:
                h = torch.tanh(h)
        return h

    def l2(self) -> torch.Tensor:
        """Sum of squared weights (not biases) per member: (K,)."""
        return sum((w**2).sum(dim=(1, 2)) for w in self.weights)


def default_hyperparameters(**overrides) -> dict:
    hyper = {
        'kind': KIND,
        'n_members': 5,
        'heads': dict(DEFAULT_HEADS),
        'fields': list(DEFAULT_FIELDS),
        'field_shape': None,  # grid shape (n1, n2, n3), set by fit
        'pca_components': 50,  # int d, or a float fraction of explained variance
        'pca_dims': {},  # fitted d per field, set by fit
        'scalar_hidden': [50, 100, 50],
        'field_hidden': [500, 500],
        # 'field': one std for all coefficients of a field, so the loss is the field's reconstruction
        # MSE (what NRMSE measures); 'component': each coefficient to unit variance (the seed)
        'coefficient_scaling': 'field',
    }
    hyper.update(overrides)
    return hyper


class PCAMLPCommittee(nn.Module):
    """The committee; build it with `fit_pcamlp` or from (hyperparameters, state_dict)."""

    kind = KIND

    def __init__(self, hyperparameters: dict, seed: int = 0):
        super().__init__()
        self.hyperparameters = copy.deepcopy(hyperparameters)
        h = self.hyperparameters
        k = h['n_members']
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer('input_mean', torch.zeros(6))
        self.register_buffer('input_std', torch.ones(6))
        self.heads = nn.ModuleDict()
        for name, n_out in h['heads'].items():
            self.heads[name] = StackedMLP(k, [6, *h['scalar_hidden'], n_out], generator)
            self.register_buffer(f'{name}_mean', torch.zeros(n_out))
            self.register_buffer(f'{name}_std', torch.ones(n_out))
        self.field_nets = nn.ModuleDict()
        n_points = int(np.prod(h['field_shape'])) if h['field_shape'] else 0
        for name in h['fields']:
            d = h['pca_dims'].get(name, 0)
            if not d:
                continue
            self.field_nets[name] = StackedMLP(k, [6, *h['field_hidden'], d], generator)
            self.register_buffer(f'{name}_pca_mean', torch.zeros(n_points))
            self.register_buffer(f'{name}_pca_components', torch.zeros(d, n_points))
            self.register_buffer(f'{name}_coef_mean', torch.zeros(d))
            self.register_buffer(f'{name}_coef_std', torch.ones(d))

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def n_members(self) -> int:
        return self.hyperparameters['n_members']

    @property
    def field_names(self) -> list[str]:
        return list(self.field_nets.keys())

    def _buffer(self, name):
        return getattr(self, name)

    def _inputs(self, deformations) -> torch.Tensor:
        d = torch.as_tensor(deformations, dtype=self.input_mean.dtype)
        return (d - self.input_mean) / self.input_std

    # -- evaluation ----------------------------------------------------------------------------

    def head_members(self, name: str, deformations) -> torch.Tensor:
        """Every member's prediction of one scalar head, physical units: (K, B, n_out). Differentiable."""
        z = self.heads[name](self._inputs(deformations))
        return z * self._buffer(f'{name}_std') + self._buffer(f'{name}_mean')

    def coefficient_members(self, name: str, deformations) -> torch.Tensor:
        """Every member's PCA coefficients of one field: (K, B, d)."""
        z = self.field_nets[name](self._inputs(deformations))
        return z * self._buffer(f'{name}_coef_std') + self._buffer(f'{name}_coef_mean')

    def free_energy(self, deformations) -> torch.Tensor:
        """Committee-mean free energy (B,) in Ha, differentiable with respect to D (for the stress)."""
        return self.head_members('F', deformations)[..., 0].mean(0)

    def reconstruct(self, name: str, coefficients: torch.Tensor) -> torch.Tensor:
        """Fields (..., n1, n2, n3) from coefficients (..., d)."""
        flat = coefficients @ self._buffer(f'{name}_pca_components') + self._buffer(f'{name}_pca_mean')
        return flat.reshape(*coefficients.shape[:-1], *self.hyperparameters['field_shape'])

    @torch.no_grad()
    def predict(self, deformations, *, fields: bool | list[str] = True, coefficients: bool = False,
                field_spread: bool = True) -> dict:
        """Committee mean and spread (population std over members) of every output, as numpy arrays.

        Keys: each head name and `<head>_std` (B, n_out); with `fields`, each field and (with
        `field_spread`, which costs K reconstructions) `<field>_std` (B, n1, n2, n3); with
        `coefficients`, `<field>_coef` and `<field>_coef_std` (B, d).
        """
        x = self._inputs(deformations)
        out = {}
        for name, net in self.heads.items():
            members = net(x) * self._buffer(f'{name}_std') + self._buffer(f'{name}_mean')
            out[name] = members.mean(0).numpy()
            out[f'{name}_std'] = members.std(0, unbiased=False).numpy()
        wanted = self.field_names if fields is True else list(fields or [])
        for name in self.field_names:
            if name not in wanted and not coefficients:
                continue
            c = self.field_nets[name](x) * self._buffer(f'{name}_coef_std') + self._buffer(f'{name}_coef_mean')
            c_mean = c.mean(0)
            if coefficients:
                out[f'{name}_coef'] = c_mean.numpy()
                out[f'{name}_coef_std'] = c.std(0, unbiased=False).numpy()
            if name in wanted:
                components = self._buffer(f'{name}_pca_components')
                out[name] = self.reconstruct(name, c_mean).numpy()
                if field_spread:
                    # the reconstruction is linear: spread of the fields from the members' deviations
                    deviation = (c - c_mean) @ components  # (K, B, n_points)
                    std = deviation.square_().mean(0).sqrt_()
                    out[f'{name}_std'] = std.reshape(len(c_mean), *self.hyperparameters['field_shape']).numpy()
        return out


def build(hyperparameters: dict) -> PCAMLPCommittee:
    """Checkpoint builder: the module, untrained, with buffers shaped by the hyperparameters."""
    return PCAMLPCommittee(hyperparameters)


def save(path, model: PCAMLPCommittee, metadata: dict | None = None, history: dict | None = None):
    """Write the committee in the package's model-file format (`ml.checkpoint`), with its training curves."""
    curves = {}
    for stage in ('scalars', 'fields'):
        if history and stage in history and history[stage]['epoch']:
            h = history[stage]
            curves[stage] = {key: torch.as_tensor(h[key], dtype=torch.float64)
                             for key in ('epoch', 'train_loss', 'val_loss')}
    return checkpoint.save(path, model, metadata=metadata, curves=curves)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _member_splits(n: int, k: int, bootstrap: bool, val_fraction: float, rng: np.random.Generator):
    """Per member: training indices and validation indices (out-of-bag with bootstrap)."""
    splits = []
    for _ in range(k):
        if bootstrap:
            train = rng.integers(0, n, size=n)
            val = np.setdiff1d(np.arange(n), train)
        else:
            perm = rng.permutation(n)
            n_val = int(round(val_fraction * n))
            train, val = perm[n_val:], perm[:n_val]
        splits.append((train, val))
    return splits


def _train_stacked(
    nets: dict, x_all: torch.Tensor, y_all: dict, splits, *, epochs: int, batch_size: int, lr: float,
    lr_final: float, l2: float, eval_every: int, rng: np.random.Generator, time_budget_s: float | None,
    log: Callable[[str], None] | None, log_every: int, label: str, lbfgs_iterations: int = 0,
    lbfgs_chunk: int = 50,
) -> dict:
    """Adam on the sum of every member's loss (members share no parameters, so they train independently).

    Each member sees batches of its own training indices; the loss of a head is the MSE of its
    standardized outputs plus ``l2`` times the sum of squared weights. Each member keeps, per net,
    the weights of its lowest validation MSE, checked every ``eval_every`` epochs and after every
    ``lbfgs_chunk`` L-BFGS iterations.
    """
    t_start = time.perf_counter()
    k = len(splits)
    n = len(x_all)
    val_mask = torch.zeros(k, n, dtype=torch.bool)
    for member, (_, val) in enumerate(splits):
        val_mask[member, torch.as_tensor(val, dtype=torch.long)] = True
    has_val = bool(val_mask.any(dim=1).all())
    train_index = np.stack([train for train, _ in splits])  # (K, n_train)
    n_train = train_index.shape[1]
    params = [p for net in nets.values() for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    gamma = (lr_final / lr) ** (1.0 / max(epochs - 1, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    best_loss = {key: torch.full((k,), float('inf')) for key in nets}
    best_state = {key: [p.detach().clone() for p in net.parameters()] for key, net in nets.items()}
    history = {'epoch': [], 'train_loss': [], 'val_loss': [], 'stopped_early': False}
    n_batches = max(1, math.ceil(n_train / batch_size))

    @torch.no_grad()
    def _keep_best(key, net) -> float:
        err = ((net(x_all) - y_all[key]) ** 2).mean(dim=2)  # (K, N)
        val = (err * val_mask).sum(1) / val_mask.sum(1)
        improved = val < best_loss[key]
        if improved.any():
            best_loss[key] = torch.where(improved, val, best_loss[key])
            for saved, p in zip(best_state[key], net.parameters()):
                saved[improved] = p.detach()[improved]
        return float(val.mean())

    epoch = 0
    if has_val:  # the untrained members, so the curve shows what training gained
        history['epoch'].append(0)
        history['train_loss'].append(float('nan'))
        history['val_loss'].append(sum(_keep_best(key, net) for key, net in nets.items()))
    for epoch in range(1, epochs + 1):
        order = np.stack([rng.permutation(row) for row in train_index])
        epoch_loss = 0.0
        for b in range(n_batches):
            idx = torch.as_tensor(order[:, b * batch_size:(b + 1) * batch_size], dtype=torch.long)
            x = x_all[idx]  # (K, B, 6)
            loss = 0.0
            for key, net in nets.items():
                loss = loss + ((net(x) - y_all[key][idx]) ** 2).mean(dim=(1, 2)).sum() + l2 * net.l2().sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() / k
        scheduler.step()
        over_budget = time_budget_s is not None and time.perf_counter() - t_start > time_budget_s
        if has_val and (epoch % eval_every == 0 or epoch == epochs or over_budget):
            val_total = sum(_keep_best(key, net) for key, net in nets.items())
            history['epoch'].append(epoch)
            history['train_loss'].append(epoch_loss / n_batches)
            history['val_loss'].append(val_total)
        if log and (epoch % log_every == 0 or epoch == 1):
            val_text = f' val {history["val_loss"][-1]:.3e}' if history['val_loss'] else ''
            log(f'{label} epoch {epoch:5d} train {epoch_loss / n_batches:.3e}{val_text} '
                f'lr {scheduler.get_last_lr()[0]:.1e}')
        if over_budget:
            history['stopped_early'] = True
            break
    history['epochs_run'] = epoch
    history['adam_seconds'] = time.perf_counter() - t_start

    # Full-batch L-BFGS on each member's own (bootstrap) sample: the smooth, low-noise regression
    # the seed poses is fitted an order of magnitude tighter than by Adam alone in the same time.
    lbfgs_done = 0
    if lbfgs_iterations and not history['stopped_early']:
        x_train = x_all[torch.as_tensor(train_index, dtype=torch.long)]
        for key, net in nets.items():
            y_train = y_all[key][torch.as_tensor(train_index, dtype=torch.long)]
            optimizer = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=lbfgs_chunk, history_size=50,
                                          line_search_fn='strong_wolfe', tolerance_grad=1e-12,
                                          tolerance_change=1e-16)

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = ((net(x_train) - y_train) ** 2).mean(dim=(1, 2)).sum() + l2 * net.l2().sum()
                loss.backward()
                return loss

            for chunk in range(math.ceil(lbfgs_iterations / lbfgs_chunk)):
                loss = optimizer.step(closure)
                if has_val:
                    _keep_best(key, net)
                if log:
                    log(f'{label} L-BFGS {key} iteration {(chunk + 1) * lbfgs_chunk} loss {loss.item():.3e} '
                        f'best val {float(best_loss[key].mean()):.3e}')
                if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
                    history['stopped_early'] = True
                    break
            lbfgs_done = max(lbfgs_done, (chunk + 1) * lbfgs_chunk)
    history['lbfgs_iterations'] = lbfgs_done
    if has_val:
        with torch.no_grad():
            for key, net in nets.items():
                for saved, p in zip(best_state[key], net.parameters()):
                    p.copy_(saved)
        history['best_val_loss'] = {key: best_loss[key].tolist() for key in nets}
        history['final_val_loss'] = float(sum(best_loss[key].mean() for key in nets))
    history['seconds'] = time.perf_counter() - t_start
    return history


def fit_pcamlp(
    deformations,
    scalars: dict,
    fields: dict | None = None,
    hyperparameters: dict | None = None,
    *,
    epochs: int = 300,
    lbfgs_iterations: int = 1000,
    field_epochs: int = 100,
    field_lbfgs_iterations: int = 200,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_final: float = 1e-5,
    l2: float = 1e-4,
    bootstrap: bool = True,
    val_fraction: float = 0.1,
    eval_every: int = 10,
    seed: int = 0,
    time_budget_s: float | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
):
    """Fit PCA bases, standardizations and the committee; returns (model, history).

    deformations: (N, 6); scalars: head name -> (N,) or (N, n_out) arrays (heads absent from
    `scalars` are dropped); fields: name -> (N, n1, n2, n3). Adam with an L2 penalty `l2` on the
    weights (the seed: lr 1e-3, L2 1e-4, batch 128, 4000 epochs), the learning rate decaying
    exponentially from `lr` to `lr_final`, then full-batch L-BFGS. The small scalar nets train for
    `epochs` + `lbfgs_iterations`; the 500-wide field nets, which cost ~25x more per epoch, for
    `field_epochs` + `field_lbfgs_iterations`. `time_budget_s` caps each of the two stages
    (reported in the history).
    """
    t_start = time.perf_counter()
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
    t_pca = time.perf_counter()
    for name in hyper['fields']:
        f = np.asarray(fields[name])
        hyper['field_shape'] = list(f.shape[1:])
        mean, components, ratio = fit_field_pca(f, hyper['pca_components'], seed=seed)
        pca[name] = (mean, components, ratio)
        hyper['pca_dims'][name] = int(len(components))
        targets[f'field:{name}'] = pca_project(f, mean, components)
    pca_seconds = time.perf_counter() - t_pca
    model = PCAMLPCommittee(hyper, seed=seed)

    mean, std = standardization(d_in)
    model.input_mean.copy_(torch.as_tensor(mean))
    model.input_std.copy_(torch.as_tensor(std))
    scalar_nets, field_nets, standardized = {}, {}, {}
    for name in hyper['heads']:
        mean, std = standardization(targets[name])
        getattr(model, f'{name}_mean').copy_(torch.as_tensor(mean))
        getattr(model, f'{name}_std').copy_(torch.as_tensor(std))
        scalar_nets[name] = model.heads[name]
        standardized[name] = (targets[name] - mean) / std
    for name in hyper['fields']:
        m, comps, _ = pca[name]
        getattr(model, f'{name}_pca_mean').copy_(torch.as_tensor(m))
        getattr(model, f'{name}_pca_components').copy_(torch.as_tensor(comps))
        c = targets[f'field:{name}']
        c_mean, c_std = standardization(c)
        if hyper['coefficient_scaling'] == 'field':
            c_std = np.full_like(c_std, c_std.max())
        getattr(model, f'{name}_coef_mean').copy_(torch.as_tensor(c_mean))
        getattr(model, f'{name}_coef_std').copy_(torch.as_tensor(c_std))
        field_nets[f'field:{name}'] = model.field_nets[name]
        standardized[f'field:{name}'] = (c - c_mean) / c_std

    x_all = model._inputs(d_in).float()
    y_all = {key: torch.as_tensor(value, dtype=torch.float32) for key, value in standardized.items()}
    splits = _member_splits(n, hyper['n_members'], bootstrap, val_fraction, rng)
    common = dict(batch_size=batch_size, lr=lr, lr_final=lr_final, l2=l2, eval_every=eval_every, rng=rng,
                  time_budget_s=time_budget_s, log=log, log_every=log_every)
    history = {'pca_seconds': pca_seconds,
               'pca_explained_variance': {name: float(pca[name][2].sum()) for name in pca}}
    if scalar_nets:
        history['scalars'] = _train_stacked(scalar_nets, x_all, y_all, splits, epochs=epochs,
                                            lbfgs_iterations=lbfgs_iterations, label='scalars', **common)
    if field_nets:
        history['fields'] = _train_stacked(field_nets, x_all, y_all, splits, epochs=field_epochs,
                                           lbfgs_iterations=field_lbfgs_iterations, label='fields', **common)
    history['train_seconds'] = time.perf_counter() - t_start
    model.eval()
    return model, history


# ----------------------------------------------------------------------------------------------
# Synthetic data with the shapes of the Mg set (development and tests only; never report as Mg)
# ----------------------------------------------------------------------------------------------


def sample_deformations(n: int, seed: int = 0, sigma_lambda: float = 0.05, sigma_theta: float = 6.0):
    """D from normals truncated at 2σ: λ in [0.9, 1.1], θ in [84°, 96°] with the default σ."""
    rng = np.random.default_rng(seed)
    scale = np.array([sigma_lambda] * 3 + [sigma_theta] * 3) / 2.0
    z = rng.normal(size=(4 * n + 16, 6))
    z = z[np.all(np.abs(z) <= 2.0, axis=1)][:n]
    return np.array([1.0, 1.0, 1.0, 90.0, 90.0, 90.0]) + z * scale


def synthetic_dataset(n: int, grid=(8, 12, 12), seed: int = 0) -> dict:
    """An analytic, smooth stand-in for the Mg labels: energies of strain, R(D) and four fields.

    F: anisotropic quadratic + cubic energy of the linear strain (mHa scale of real Mg);
    fields: periodic Gaussians at the four atoms of the symmetric form with R(D), widths and
    amplitudes depending on the strain. Returns arrays with the keys the benchmark expects.
    """
    from aiida_mlresponse.physics import strain as st

    d = sample_deformations(n, seed)
    e = st.deformation_to_strain(d)
    voigt = np.stack([e[:, 0, 0], e[:, 1, 1], e[:, 2, 2], e[:, 1, 2], e[:, 0, 2], e[:, 0, 1]], 1)
    stiffness = np.diag([0.35, 0.35, 0.38, 0.1, 0.1, 0.12])
    stiffness[0, 1] = stiffness[1, 0] = 0.12
    stiffness[0, 2] = stiffness[2, 0] = stiffness[1, 2] = stiffness[2, 1] = 0.1
    quad = 0.5 * np.einsum('ni,ij,nj->n', voigt, stiffness, voigt)
    cubic = -0.8 * (voigt[:, 0] + voigt[:, 1] + voigt[:, 2]) ** 3 + 0.3 * voigt[:, 1] * voigt[:, 5] ** 2
    free = -4.0 + quad + cubic
    minus_ts = -1e-3 * (1.0 + 2.0 * voigt[:, :3].sum(1) + 3.0 * voigt[:, 5] ** 2)
    band = 1.5 - 2.0 * voigt[:, :3].sum(1) + 0.4 * quad
    r = np.stack([0.2 * voigt[:, 5] * voigt[:, 1], -0.5 * voigt[:, 5] + 0.1 * voigt[:, 3], 0.3 * voigt[:, 4] * voigt[:, 3]], 1)
    axes = [np.arange(m) / m for m in grid]
    frac = np.stack(np.meshgrid(*axes, indexing='ij'), -1)  # (n1, n2, n3, 3)
    cell = st.deformation_to_cell(d)
    positions = st.symmetric_form_positions(r)  # (N, 4, 3)
    out = {name: np.zeros((n, *grid), dtype=np.float32) for name in DEFAULT_FIELDS}
    for i in range(n):
        metric = cell[i] @ cell[i].T
        total = np.zeros(grid)
        for atom in positions[i]:
            delta = frac - atom
            delta -= np.round(delta)
            dist2 = np.einsum('...i,ij,...j->...', delta, metric, delta)
            total += np.exp(-dist2 / (2.0 * (1.3 + 0.5 * voigt[i, 0]) ** 2))
        volume = np.linalg.det(cell[i])
        out['rho'][i] = (0.02 + 0.1 * total) * 574.0 / volume
        out['phi'][i] = -0.5 * total - 0.1 * voigt[i, 1] * np.cos(2 * np.pi * frac[..., 1])
        out['u'][i] = 0.01 * total * (1 + voigt[i, 2]) + 0.002 * np.sin(2 * np.pi * frac[..., 2])
        out['s'][i] = 1e-4 * total**2 * (1 + 3 * voigt[i, 5])
    return {'D': d, 'F': free, 'U': band, 'minus_TS': minus_ts, 'R': r, **out}


# ----------------------------------------------------------------------------------------------
# The Mg dataset written by the labelling campaign (runs/mg_fast/*.npz)
# ----------------------------------------------------------------------------------------------

#: dataset array -> model output name
MG_ARRAYS = {'free_energy': 'F', 'band_energy': 'U', 'entropy_energy': 'minus_TS', 'R': 'R',
             'rho': 'rho', 'phi': 'phi', 'u': 'u', 's': 's'}


def load_mg_arrays(path) -> dict:
    """Campaign data as {'D', 'F', 'U', 'minus_TS', 'R', 'rho', 'phi', 'u', 's', 'cell', 'volume', 'stress', 'index'}.

    `path`: the stacked campaign file, or a folder of one-configuration files (`configs/*.npz`),
    which holds the configurations finished since the last export too.
    """
    keys = ['deformation', 'cell', 'volume', 'index', 'stress', *MG_ARRAYS]
    path = pathlib.Path(path)
    if path.is_dir():
        rows = []
        for file in sorted(path.glob('*.npz')):
            try:
                with np.load(file) as z:
                    rows.append({key: z[key] for key in keys})
            except (OSError, ValueError, KeyError, EOFError):  # a file still being written
                continue
        raw = {key: np.stack([row[key] for row in rows]) for key in keys}
    else:
        with np.load(path) as z:
            raw = {key: z[key] for key in keys}
    out = {'D': raw['deformation'], 'cell': raw['cell'], 'volume': raw['volume'], 'index': raw['index'],
           'stress': raw['stress']}
    for key, name in MG_ARRAYS.items():
        out[name] = raw[key]
    return out


def position_error(r_pred, r_true, cells) -> np.ndarray:
    """Cartesian displacement error (Bohr) of the basis atoms, (N,): |ΔR · cell|, the same for all four."""
    delta = np.asarray(r_pred, dtype=float) - np.asarray(r_true, dtype=float)
    return np.linalg.norm(np.einsum('ni,nij->nj', delta, np.asarray(cells, dtype=float)), axis=1)


def train_and_save(arrays: dict, path, settings: dict | None = None, log: Callable[[str], None] | None = print):
    """Train a committee on dataset arrays (keys of `load_mg_arrays`) and write it as a model file.

    The hook for the package's training entry point (kind 'pcamlp'): `settings` holds the model
    hyperparameters under 'hyperparameters' and any keyword of `fit_pcamlp` (epochs, l2, ...).
    """
    settings = dict(settings or {})
    hyper = settings.pop('hyperparameters', {})
    scalars = {name: arrays[name] for name in DEFAULT_HEADS if name in arrays}
    fields = {name: arrays[name] for name in DEFAULT_FIELDS if name in arrays}
    model, history = fit_pcamlp(arrays['D'], scalars, fields, hyper, log=log, **settings)
    metadata = {'inputs': 'D = (λa, λb, λc, θa, θb, θc), angles in degrees',
                'units': {'F': 'Ha', 'U': 'Ha', 'minus_TS': 'Ha', 'R': 'reduced', 'rho': 'e/Bohr^3',
                          'phi': 'Ha', 'u': 'Ha/Bohr^3', 's': '1/Bohr^3'},
                'n_train': int(len(arrays['D'])), 'train_seconds': history['train_seconds'],
                'settings': {k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}}
    save(path, model, metadata=metadata, history=history)
    return model, history
