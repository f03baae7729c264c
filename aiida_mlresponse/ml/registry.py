"""The one table of model kinds: what builds each kind from a model file, how each is trained, what predicts with it.

Readers: the checkpoint reader (`checkpoint.load`: the builder of the file's kind), the training entry point
(`train_entry`: the trainer of the requested kind), the training CalcJob (`models.calculation`: which kinds it
accepts and what dataset each needs, checked before submission), and `aiida-mlresponse predict` and
`models.inference` (the predictor of a model file's kind).

Kinds are the strings stored in model files and in `ModelData` nodes, so they never change:

- 'radnet': one radnet CNN (`radnet.network`). As the `model_kind` of a training it means the radnet
  family: it trains a committee and writes a 'radnet_committee' file.
- 'radnet_committee': a committee of radnet CNNs (`radnet.committee`); predicts P or ε∞ (and Z*) of structures.
- 'pcamlp': the PCA-MLP committee of strained Mg (`pcamlp.model`); trained on an 'mg_strain' dataset.

Targets are 'module:function' strings, imported when used, so reading the table imports no torch model code.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Training:
    """How the training entry point trains a kind."""

    dataset_kind: str  # the `DatasetData` kind (`data.schema`) it trains on
    needs: tuple  # dataset columns it cannot train without
    targets: dict  # value of the `target` hyperparameter -> the dataset column it learns ({}: no choice)
    function: str  # 'module:function'(arrays, attributes, hyperparameters, model_path, log, parent=None) writing the
    # model file; `parent`: a model file of kind `writes` to warm-start from (a previous round's)
    writes: str  # the kind of the model file written
    warm_start: bool = False  # active learning's default: each round starts from the last round's model


@dataclasses.dataclass(frozen=True)
class ModelKind:
    name: str
    builder: str | Callable  # 'module:function' or callable: hyperparameters -> the torch module of a model file
    training: Training | None = None  # None: not a `model_kind` a training accepts
    predictor: str | None = None  # 'module:function'(model, metadata, positions, cell, numbers, with_born_charges)


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind('radnet', 'aiida_mlresponse.ml.radnet.network:build', training=Training(
        'response', ('positions', 'cells'), {'polarization': 'polarization', 'dielectric': 'dielectric_tensor'},
        # by default the members are closed-form heads, refitted whatever the start: nothing to warm-start
        'aiida_mlresponse.ml.radnet.fit:train_from_dataset', writes='radnet_committee')),
    ModelKind('radnet_committee', 'aiida_mlresponse.ml.radnet.committee:build',
              predictor='aiida_mlresponse.ml.radnet.predict:predict_response'),
    ModelKind('pcamlp', 'aiida_mlresponse.ml.pcamlp.model:build', training=Training(
        'mg_strain', ('deformation', 'free_energy', 'band_energy', 'entropy_energy', 'R'), {},
        'aiida_mlresponse.ml.pcamlp.fit:train_from_dataset', writes='pcamlp', warm_start=True)),
)}


def register_kind(kind: str, builder: str | Callable, training: Training | None = None,
                  predictor: str | None = None) -> None:
    """Add a model family (or replace one): `builder` is a callable or a 'module:function' path."""
    KINDS[kind] = ModelKind(kind, builder, training, predictor)


def get_kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise KeyError(f'unknown model kind `{kind}`; known kinds: {", ".join(sorted(KINDS))}.')
    return KINDS[kind]


def trainable_kinds() -> list[str]:
    """The kinds a training accepts as `model_kind`."""
    return sorted(name for name, kind in KINDS.items() if kind.training is not None)


def _resolve(target: str | Callable) -> Callable:
    if not isinstance(target, str):
        return target
    module, name = target.split(':')
    return getattr(importlib.import_module(module), name)


def builder(kind: str) -> Callable:
    """hyperparameters -> the untrained module of a model file of this kind."""
    return _resolve(get_kind(kind).builder)


def trainer(kind: str) -> Callable:
    """The function that trains `kind` (a `model_kind`) and writes its model file."""
    check_training(kind)
    return _resolve(KINDS[kind].training.function)


def predictor(kind: str) -> Callable:
    """The function that predicts structures with a model file of this kind."""
    target = get_kind(kind).predictor
    if target is None:
        with_predictor = sorted(name for name, entry in KINDS.items() if entry.predictor)
        raise ValueError(f'a `{kind}` model does not predict structures; kinds that do: {", ".join(with_predictor)}.')
    return _resolve(target)


def check_training(kind: str, dataset_kind: str | None = None, arraynames=None, hyperparameters: dict | None = None):
    """Refuse, before anything runs, an unknown kind, a family/dataset mismatch or a target the dataset lacks."""
    if kind not in KINDS or KINDS[kind].training is None:
        raise ValueError(f'unknown model kind `{kind}`; known kinds: {", ".join(trainable_kinds())}.')
    training = KINDS[kind].training
    if dataset_kind is None:
        return
    if dataset_kind != training.dataset_kind:
        raise ValueError(f'a `{kind}` model trains on a `{training.dataset_kind}` dataset, '
                         f'got a `{dataset_kind}` dataset.')
    arraynames = set(arraynames or ())
    missing = [name for name in training.needs if name not in arraynames]
    if missing:
        raise ValueError(f'the dataset lacks the arrays {missing} that a `{kind}` model needs.')
    if training.targets:
        target = (hyperparameters or {}).get('target', 'polarization')
        if target not in training.targets:
            raise ValueError(f'unknown target `{target}` for `{kind}`; choose one of {sorted(training.targets)}.')
        if training.targets[target] not in arraynames:
            raise ValueError(f'the dataset has no `{training.targets[target]}` array for target `{target}`.')


def check_parent(kind: str, parent_kind: str):
    """Refuse a parent model (to warm-start a `kind` training from) of another kind than the training writes."""
    check_training(kind)
    writes = KINDS[kind].training.writes
    if parent_kind != writes:
        raise ValueError(f'a `{kind}` training warm-starts from a `{writes}` model, got a `{parent_kind}` model.')
