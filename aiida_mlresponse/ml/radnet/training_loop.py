"""Training loop shared by the model families: Adam, mini-batches, MSE on normalized targets, early stopping.

`train` works for any torch module and a `loss_function(model, batch_indices) -> scalar` (or the default:
MSE of ``forward_normalized(model, inputs[batch])`` against normalized targets). It keeps the state of the
epoch with the lowest validation loss (the model is restored to it at the end), stops when the validation
loss has not improved for ``patience`` epochs, logs one line per epoch (``log``: a callable taking a
string, e.g. ``print`` or ``logger.info``; the CalcJob writes them to its output) and, when asked, shows a
tqdm progress bar. The returned curve is stored in checkpoints (`TrainingResult.curve_arrays`): one float64
tensor per key, one entry per epoch, epoch 0 being the model before any step:

- ``epoch``; ``train_loss``: mean loss over the epoch's mini-batches (epoch 0: evaluated on the training set);
- ``validation_loss``: loss on the validation samples after the epoch (the early-stopping criterion);
- ``learning_rate``: after the epoch's scheduler step; ``seconds``: wall time since the start.

Learning-rate schedules (``schedule``): 'plateau' (x plateau_factor after plateau_patience epochs without a
better validation loss) or 'cosine' (from learning_rate down to min_learning_rate over ``epochs``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch


@dataclasses.dataclass
class TrainingConfig:
    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 50  # epochs without a better validation loss before stopping
    min_learning_rate: float = 1e-5
    plateau_factor: float = 0.5  # learning rate x factor after plateau_patience epochs without progress
    plateau_patience: int = 15
    schedule: str = 'plateau'  # or 'cosine'
    seed: int = 0
    progress: bool = False  # tqdm bar
    log_every: int = 1  # epochs between log lines (0: none)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainingResult:
    best_epoch: int
    best_validation_loss: float
    curve: list  # one dict per epoch
    stopped_early: bool
    seconds: float
    summary: dict = dataclasses.field(default_factory=dict)  # JSON-able facts added by the caller (e.g. shrinkage)

    def curve_arrays(self) -> dict:
        """The curve as float64 tensors, for checkpoints."""
        keys = ('epoch', 'train_loss', 'validation_loss', 'learning_rate', 'seconds')
        return {key: torch.tensor([row[key] for row in self.curve], dtype=torch.float64) for key in keys}


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def evaluate_loss(loss_function: Callable, model, indices: torch.Tensor, batch_size: int = 256) -> float:
    """Mean loss over `indices`, evaluated without gradients in chunks (weighted by chunk size)."""
    if len(indices) == 0:
        return math.nan
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            total += float(loss_function(model, chunk)) * len(chunk)
    return total / len(indices)


def train(model: torch.nn.Module, loss_function: Callable, train_indices, validation_indices,
          config: TrainingConfig | None = None, log: Callable[[str], None] | None = print,
          description: str = '') -> TrainingResult:
    """Fit `model` in place; at the end it holds the weights of its best validation epoch.

    loss_function(model, indices) -> scalar tensor: the loss on the samples `indices` (a LongTensor into
    the caller's data). train_indices / validation_indices: the samples of each set (sequences of ints).
    Epoch 0 is the model before any step, so a model that starts from a good guess (e.g. a zero-initialized
    residual on top of a baseline) is never made worse on the validation set.
    """
    config = config or TrainingConfig()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_indices = torch.as_tensor(np.asarray(train_indices), dtype=torch.long)
    validation_indices = torch.as_tensor(np.asarray(validation_indices), dtype=torch.long)
    if len(train_indices) == 0:
        raise ValueError('no training samples')
    if len(validation_indices) == 0:
        raise ValueError('no validation samples: early stopping needs a validation set')

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.schedule == 'plateau':
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_learning_rate)
    elif config.schedule == 'cosine':
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, config.epochs), eta_min=config.min_learning_rate)
    else:
        raise ValueError(f"schedule must be 'plateau' or 'cosine', got {config.schedule!r}")

    start = time.perf_counter()
    model.eval()
    best_loss = evaluate_loss(loss_function, model, validation_indices)
    best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
    curve = [{'epoch': 0, 'train_loss': evaluate_loss(loss_function, model, train_indices),
              'validation_loss': best_loss, 'learning_rate': config.learning_rate, 'seconds': 0.0}]
    if log and config.log_every:
        log(f'{description}epoch 0 train {curve[0]["train_loss"]:.4e} validation {best_loss:.4e}')

    bar = None
    if config.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, desc=description.strip() or 'training', leave=False)

    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        running, count = 0.0, 0
        for batch in _batches(len(train_indices), config.batch_size, generator):
            indices = train_indices[batch]
            loss = loss_function(model, indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach()) * len(indices)
            count += len(indices)
        model.eval()
        validation_loss = evaluate_loss(loss_function, model, validation_indices)
        scheduler.step(validation_loss) if config.schedule == 'plateau' else scheduler.step()
        learning_rate = optimizer.param_groups[0]['lr']
        row = {'epoch': epoch, 'train_loss': running / count, 'validation_loss': validation_loss,
               'learning_rate': learning_rate, 'seconds': time.perf_counter() - start}
        curve.append(row)
        improved = validation_loss < best_loss
        if improved:
            best_loss, best_epoch = validation_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        if log and config.log_every and epoch % config.log_every == 0:
            log(f'{description}epoch {epoch} train {row["train_loss"]:.4e} validation {validation_loss:.4e} '
                f'lr {learning_rate:.2e}{" *" if improved else ""}')
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f'{row["train_loss"]:.3e}', validation=f'{validation_loss:.3e}')
        if epoch - best_epoch >= config.patience:
            stopped_early = True
            if log:
                log(f'{description}early stop at epoch {epoch}: best validation {best_loss:.4e} at epoch {best_epoch}')
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    return TrainingResult(best_epoch, best_loss, curve, stopped_early, time.perf_counter() - start)


def mse_loss_function(forward: Callable, inputs, targets: torch.Tensor) -> Callable:
    """loss(model, indices) = mean((forward(model, inputs[indices]) - targets[indices])²)."""
    def loss(model, indices):
        prediction = forward(model, inputs[indices])
        return torch.mean((prediction - targets[indices].to(prediction.dtype)) ** 2)
    return loss
