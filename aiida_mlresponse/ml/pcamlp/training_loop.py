"""The training loop of the PCA-MLP committee: every member of a stacked net at once (Adam, L-BFGS, ridge refit).

`FitSettings` holds the knobs of `fit.fit_pcamlp` (defaults: the values measured on the Mg campaign data).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch

from .network import StackedMLP


@dataclasses.dataclass
class FitSettings:
    """How `fit.fit_pcamlp` trains (the model's shape is in its hyperparameters, not here).

    Adam with an L2 penalty `l2` on the weights (the seed: lr 1e-3, L2 1e-4, batch 128, 4000 epochs), the
    learning rate decaying exponentially from `lr` to `lr_final`, then full-batch L-BFGS, then the exact
    ridge solution of the linear output layer (`refit_output`). The small scalar nets train for `epochs` +
    `lbfgs_iterations`; the wider field nets, which cost more per epoch, for `field_epochs` +
    `field_lbfgs_iterations` (minibatches of `field_batch_size`, default `batch_size`). Each member trains
    on a bootstrap sample (`bootstrap`; else a split leaving out `val_fraction`) and keeps the weights of
    its lowest validation loss, checked every `eval_every` epochs. `time_budget_s` caps each of the two
    stages. `stress_weight`: weight of ABINIT's stress in the F head's loss (0: values only).

    Early stopping (`patience`): Adam stops after `patience` checks in a row (every `eval_every` epochs)
    in which the members' mean best validation loss fell by no more than `min_delta` (relative), L-BFGS
    likewise per head or field (checked every 50 iterations); None trains the full counts. On the 56
    `fast` Mg labels of a campaign's second round the validation loss of F, U, -TS, u rose from the first
    L-BFGS check on (that of the others moved by < 3 % after 200 iterations) while the full counts ran 8 x 1000
    iterations: early stopping took 58-66 CPU s to 25, the same test errors (benchmarks/warm_start.py).

    Warm start (`fit.fit_pcamlp` with a parent model): the nets start from the parent's hidden layers with
    their output layer solved for the new targets, and train for the `warm_*` counts at `warm_lr` (a tenth
    of `lr`: the parent already fits the surface, a large step would undo it; the L-BFGS counts are caps, its
    plateau stops it first). `threads`: torch's intra-op threads during the fit (None: leave them). One: the
    nets are small, and on a shared machine a second thread spin-waits (the scalar nets' L-BFGS on 56 Mg
    labels at load 7-11: 14-18x the CPU seconds of one thread, 13x the wall time).
    """

    stress_weight: float = 1.0
    epochs: int = 300
    lbfgs_iterations: int = 1000
    field_epochs: int = 100
    field_lbfgs_iterations: int = 1000
    batch_size: int = 128
    field_batch_size: int | None = None
    lr: float = 1e-3
    lr_final: float = 1e-5
    l2: float = 1e-4
    refit_output: bool = True
    bootstrap: bool = True
    val_fraction: float = 0.1
    eval_every: int = 10
    seed: int = 0
    time_budget_s: float | None = None
    log_every: int = 100
    patience: int | None = 5
    min_delta: float = 1e-3
    threads: int | None = 1
    warm_epochs: int = 30
    warm_lbfgs_iterations: int = 300
    warm_field_epochs: int = 10
    warm_field_lbfgs_iterations: int = 300
    warm_lr: float = 1e-4

    @classmethod
    def from_dict(cls, values: dict | None) -> 'FitSettings':
        """From JSON (a CalcJob's hyperparameters); an unknown key is refused with the known ones named."""
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values or {}) - set(known))
        if unknown:
            raise ValueError(f'unknown pcamlp fit settings {unknown}: known are {known} (and `hyperparameters`).')
        return cls(**(values or {}))

    def warm(self) -> 'FitSettings':
        """These settings with the warm-start schedule (the `warm_*` counts and learning rate)."""
        return dataclasses.replace(self, epochs=self.warm_epochs, lbfgs_iterations=self.warm_lbfgs_iterations,
                                   field_epochs=self.warm_field_epochs, lr=self.warm_lr,
                                   field_lbfgs_iterations=self.warm_field_lbfgs_iterations)


def member_splits(n: int, k: int, bootstrap: bool, val_fraction: float, rng: np.random.Generator):
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


def train_stacked(
    net: StackedMLP, x_all: torch.Tensor, y_all: torch.Tensor, mask: torch.Tensor, splits, settings: FitSettings, *,
    epochs: int, lbfgs_iterations: int, batch_size: int, rng: np.random.Generator,
    log: Callable[[str], None] | None, label: str, group_names: list[str], lbfgs_chunk: int = 50,
    slopes: 'Slopes | None' = None, warm: bool = False,
) -> dict:
    """Train a stacked net of G x K members, member g*K + k fitting output group g on the data of split k.

    y_all: (G, N, n_out) standardized targets, zero in padded columns; mask (G, n_out): real columns.
    Members share no parameters, so the summed loss trains them independently, all in one batched
    product per layer. The loss of a member is the MSE of its real standardized outputs plus ``settings.l2``
    times the sum of its squared weights. Adam on minibatches of `batch_size` of each member's own indices
    for `epochs` (learning rate decaying exponentially from `lr` to `lr_final`), then `lbfgs_iterations` of
    full-batch L-BFGS, then (with `refit_output`) the exact minimizer of that loss over the linear output
    layer (ridge regression on the last hidden layer). Each member keeps the weights of its lowest
    validation MSE, checked every ``eval_every`` epochs, after every ``lbfgs_chunk`` L-BFGS iterations and
    after the refit.

    `slopes` adds to the loss of one group's members the mean squared error of their input gradients
    mapped by `slopes.jacobian` (for F: the stress), see `Slopes`; validation stays on the values.
    Adam, and L-BFGS group by group, stop early on a plateau of the validation loss (``settings.patience``).
    `warm`: the net holds a parent's weights; its output layer is first solved for these targets.
    """
    lr, lr_final, l2, eval_every = settings.lr, settings.lr_final, settings.l2, settings.eval_every
    time_budget_s, log_every, refit_output = settings.time_budget_s, settings.log_every, settings.refit_output
    t_start, cpu_start = time.perf_counter(), time.process_time()
    k = len(splits)
    g, n = y_all.shape[0], x_all.shape[0]
    m = g * k
    member_mask = mask.repeat_interleave(k, 0)[:, None, :]  # (M, 1, n_out)
    member_columns = member_mask.sum(dim=(1, 2))  # (M,)
    y_members = y_all.repeat_interleave(k, 0)  # (M, N, n_out)
    val_mask = torch.zeros(k, n, dtype=torch.bool)
    for member, (_, val) in enumerate(splits):
        val_mask[member, torch.as_tensor(val, dtype=torch.long)] = True
    val_mask = val_mask.repeat(g, 1)  # (M, N)
    has_val = bool(val_mask.any(dim=1).all())
    train_np = np.stack([train for train, _ in splits])  # (K, n_train)
    train_index = torch.as_tensor(train_np, dtype=torch.long).repeat(g, 1)  # (M, n_train)
    n_train = train_index.shape[1]
    rows = torch.arange(m)[:, None]
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    gamma = (lr_final / lr) ** (1.0 / max(epochs - 1, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    best_loss = torch.full((m,), float('inf'))
    best_state = [p.detach().clone() for p in net.parameters()]
    history = {'epoch': [], 'train_loss': [], 'val_loss': [], 'stopped_early': False}
    n_batches = max(1, math.ceil(n_train / batch_size))

    def member_loss(index: torch.Tensor, module: StackedMLP = net, members: slice = slice(None)) -> torch.Tensor:
        """Loss of each of `module`'s members (`members` of the stack) on its rows `index`."""
        index = index[members]
        err = (module(x_all[index]) - y_members[rows[members], index]) ** 2 * member_mask[members]
        loss = err.sum(dim=(1, 2)) / (index.shape[1] * member_columns[members]) + l2 * module.l2()
        if slopes is not None:
            local = _local_members(members, slopes.group * k, (slopes.group + 1) * k, m)
            if local is not None:
                extra = slopes.loss(module, local, x_all, index[local])
                loss = loss + torch.cat([loss.new_zeros(local.start), extra, loss.new_zeros(len(loss) - local.stop)])
        return loss

    @torch.no_grad()
    def _keep_best() -> float:
        err = ((net(x_all) - y_members) ** 2 * member_mask).sum(2) / member_columns[:, None]  # (M, N)
        val = (err * val_mask).sum(1) / val_mask.sum(1)
        improved = val < best_loss
        if improved.any():
            best_loss.copy_(torch.where(improved, val, best_loss))
            for saved, p in zip(best_state, net.parameters()):
                saved[improved] = p.detach()[improved]
        return float(val.view(g, k).mean(1).sum())

    def over_budget() -> bool:
        return time_budget_s is not None and time.perf_counter() - t_start > time_budget_s

    if warm and refit_output:  # the parent's features, an output layer for the new targets (and PCA basis)
        _refit_output_layer(net, x_all, y_members, member_mask, train_index, l2, slopes=slopes, k=k)
    epoch = 0
    if has_val:  # the untrained (or warm-started) members, so the curve shows what training gained
        history['epoch'].append(0)
        history['train_loss'].append(float('nan'))
        history['val_loss'].append(_keep_best())
    plateau = _Plateau(best_loss, slice(None), settings.patience if has_val else None, settings.min_delta)
    for epoch in range(1, epochs + 1):
        # each committee member its own shuffle of its own sample, the same for all its groups
        order = torch.as_tensor(np.stack([rng.permutation(row) for row in train_np]), dtype=torch.long).repeat(g, 1)
        epoch_loss = 0.0
        for b in range(n_batches):
            loss = member_loss(order[:, b * batch_size:(b + 1) * batch_size]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() / k
        scheduler.step()
        stop = over_budget()
        plateaued = False
        if has_val and (epoch % eval_every == 0 or epoch == epochs or stop):
            history['epoch'].append(epoch)
            history['train_loss'].append(epoch_loss / n_batches)
            history['val_loss'].append(_keep_best())
            plateaued = plateau.stalled()
        if log and (epoch % log_every == 0 or epoch == 1):
            val_text = f' val {history["val_loss"][-1]:.3e}' if history['val_loss'] else ''
            log(f'{label} epoch {epoch:5d} train {epoch_loss / n_batches:.3e}{val_text} '
                f'lr {scheduler.get_last_lr()[0]:.1e}')
        if stop:
            history['stopped_early'] = True
            break
        if plateaued:
            if log:
                log(f'{label} Adam stops at epoch {epoch}: validation loss on a plateau')
            break
    history['epochs_run'] = epoch
    history['adam_seconds'] = time.perf_counter() - t_start

    # Full-batch L-BFGS on each member's own (bootstrap) sample: the smooth, low-noise regression
    # the seed poses is fitted an order of magnitude tighter than by Adam alone in the same time.
    # One group (head or field) at a time: a line search shared by all groups fits each less well.
    lbfgs_done, history['lbfgs_iterations_per_group'] = 0, {}
    for i, name in enumerate(group_names if lbfgs_iterations and not history['stopped_early'] else []):
        members = slice(i * k, (i + 1) * k)
        plateau = _Plateau(best_loss, members, settings.patience if has_val else None, settings.min_delta)
        sub = net.subset(members)
        optimizer = torch.optim.LBFGS(sub.parameters(), lr=1.0, max_iter=lbfgs_chunk, history_size=50,
                                      line_search_fn='strong_wolfe', tolerance_grad=1e-12, tolerance_change=1e-16)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = member_loss(train_index, sub, members).sum()
            loss.backward()
            return loss

        for chunk in range(math.ceil(lbfgs_iterations / lbfgs_chunk)):
            loss = optimizer.step(closure)
            net.assign(members, sub)
            lbfgs_done = max(lbfgs_done, (chunk + 1) * lbfgs_chunk)
            history['lbfgs_iterations_per_group'][name] = (chunk + 1) * lbfgs_chunk
            val_text = f' val {_keep_best():.3e}' if has_val else ''
            if log:
                log(f'{label} L-BFGS {name} iteration {(chunk + 1) * lbfgs_chunk} loss {loss.item():.3e}{val_text}')
            if over_budget():
                history['stopped_early'] = True
                break
            if plateau.stalled():
                if log:
                    log(f'{label} L-BFGS {name} stops: validation loss on a plateau')
                break
        if history['stopped_early']:
            break
    history['lbfgs_iterations'] = lbfgs_done
    history['lbfgs_seconds'] = time.perf_counter() - t_start - history['adam_seconds']
    if has_val:
        with torch.no_grad():
            for saved, p in zip(best_state, net.parameters()):
                p.copy_(saved)
    if refit_output:
        _refit_output_layer(net, x_all, y_members, member_mask, train_index, l2, slopes=slopes, k=k)
        if has_val:
            val_text = f'{_keep_best():.3e}'
            with torch.no_grad():
                for saved, p in zip(best_state, net.parameters()):
                    p.copy_(saved)
            if log:
                log(f'{label} output layer refit: val {val_text}, best kept {float(best_loss.view(g, k).mean(1).sum()):.3e}')
    if has_val:
        history['best_val_loss'] = {name: best_loss[i * k:(i + 1) * k].tolist() for i, name in enumerate(group_names)}
        history['final_val_loss'] = float(best_loss.view(g, k).mean(1).sum())
    history['seconds'] = time.perf_counter() - t_start
    history['cpu_seconds'] = time.process_time() - cpu_start  # CPU time of this process (all its threads)
    return history


class _Plateau:
    """Counts the checks since the mean best validation loss of some members last fell by more than
    `min_delta` (relative); `stalled()` (call it after each check) is True after `patience` of them."""

    def __init__(self, best_loss: torch.Tensor, members: slice, patience: int | None, min_delta: float):
        self.best_loss, self.members, self.patience, self.min_delta = best_loss, members, patience, min_delta
        self.reference, self.waited = self._current(), 0

    def _current(self) -> float:
        return float(self.best_loss[self.members].mean())

    def stalled(self) -> bool:
        current = self._current()
        if current < self.reference * (1.0 - self.min_delta):
            self.reference, self.waited = current, 0
        else:
            self.waited += 1
        return self.patience is not None and self.waited >= self.patience


def _local_members(members: slice, start: int, stop: int, m: int) -> slice | None:
    """Members start:stop of a stack of m, counted within the run of `members` (None if not all in it)."""
    first, last, _ = members.indices(m)
    if start < first or stop > last:
        return None
    return slice(start - first, stop - first)


class Slopes:
    """Gradient data for one group of a stacked net: ABINIT's stress for the free-energy head.

    With standardized inputs x and output y, the targets are t_v = Σ_j ∂y/∂x_j J[j, v] (N, n_v):
    for F, J = (F_std / D_std_j / σ_std) `physics.stress.cauchy_stress_map` and t = σ / σ_std, σ_std
    one scale for all components. The loss term of each member is `weight` times the mean squared
    error of t over its rows and components: one configuration brings six stress numbers beside F.
    """

    def __init__(self, group: int, jacobian: torch.Tensor, targets: torch.Tensor, weight: float):
        self.group, self.jacobian, self.targets, self.weight = group, jacobian, targets, float(weight)

    def predict(self, gradients: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """t (K, B, n_v) from input gradients (K, B, 6) of the rows `index` (K, B)."""
        return torch.einsum('kbj,kbjv->kbv', gradients, self.jacobian[index])

    def loss(self, module: StackedMLP, members: slice, x_all: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(K,) slope loss of `members` of `module` on their rows `index` (K, B), differentiable twice."""
        x = x_all[index].requires_grad_(True)
        y = module(x, members)[..., 0]
        (gradients,) = torch.autograd.grad(y.sum(), x, create_graph=True)  # each member has its own copy of x
        return self.weight * ((self.predict(gradients, index) - self.targets[index]) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def _refit_output_layer(net: StackedMLP, x_all, y_members, member_mask, train_index, l2: float,
                        slopes: Slopes | None = None, k: int = 1):
    """Replace each member's linear output layer by the exact minimizer of its training loss.

    With the hidden layers fixed the loss (1/(n c)) |H W + b - Y|^2 + l2 |W|^2 (c real output columns)
    is a ridge regression: (H^T H + n c l2 I) W = H^T Y on the centred features, in float64. The
    slope term of `slopes` is linear in W too (∂y/∂x = (∂H/∂x) W): its rows join the same normal
    equations for that group's members.
    """
    h = net.hidden(x_all[train_index]).double()  # (M, n, n_hidden)
    y = y_members[torch.arange(len(train_index))[:, None], train_index].double()  # (M, n, n_out)
    n, n_hidden = h.shape[1], h.shape[2]
    h_mean, y_mean = h.mean(1, keepdim=True), y.mean(1, keepdim=True)
    hc, yc = h - h_mean, y - y_mean
    columns = member_mask.sum(dim=(1, 2)).double()
    gram = hc.transpose(1, 2) @ hc + (n * columns * l2)[:, None, None] * torch.eye(n_hidden, dtype=torch.float64)
    rhs = hc.transpose(1, 2) @ yc
    if slopes is not None:  # its head has one real column (column 0), so c = 1
        members = slice(slopes.group * k, (slopes.group + 1) * k)
        index = train_index[members]
        _, jacobian = net.hidden_and_jacobian(x_all[index], members)  # (K, n, n_hidden, 6)
        # rows of the slope term: G[b, v] = Σ_j ∂H_b/∂x_j J_b[j, v]; loss weight / (n n_v) vs 1 / n for values
        g = torch.einsum("kbhj,kbjv->kbvh", jacobian.double(), slopes.jacobian[index].double()).reshape(k, -1, n_hidden)
        t = slopes.targets[index].double().reshape(k, -1, 1)
        scale = slopes.weight / slopes.targets.shape[1]
        gram[members] += scale * g.transpose(1, 2) @ g
        rhs[members, :, :1] += scale * g.transpose(1, 2) @ t
    w = torch.linalg.solve(gram, rhs) * member_mask.double()
    b = y_mean - h_mean @ w
    net.weights[-1].copy_(w)
    net.biases[-1].copy_(b)


