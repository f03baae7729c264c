"""One model-file format for every model family, loadable without executing pickled code.

A checkpoint is a plain dict written by `torch.save` and read by `torch.load(weights_only=True)`:

    {'format': 'aiida-mlresponse-model', 'version': 2,
     'kind': str,                      # a kind of `registry.KINDS`: 'radnet', 'radnet_committee', 'pcamlp'
     'hyperparameters': dict,          # JSON-able: everything the builder needs to construct the module
     'packed_state': {'names': [str], 'shapes': [[int]], 'dtypes': [str],
                      'blobs': {dtype: tensor}},  # parameters and buffers, one flat tensor per dtype
     'metadata': dict,                 # JSON-able: targets, units, training data description, ...
     'curves': {name: {key: tensor}}}  # training curves (e.g. one per committee member)

The state is packed because the weights-only unpickler costs ~0.1 ms per tensor (a committee has dozens):
packed, reading two GaAs committees takes a few ms instead of ~8 (benchmarks/radnet_speed.py). `read` returns
the state unpacked as ``'state_dict'`` ({name: tensor}), and reads version-1 files, which stored that dict.

Loading: ``registry.builder(kind)(hyperparameters)`` constructs the module, then ``load_state_dict``.
A new family registers itself with ``registry.register_kind(kind, builder)`` (builder: hyperparameters ->
nn.Module whose ``state_dict`` matches what was saved). Only tensors, numbers, strings, lists, dicts,
None and booleans go in the file, so nothing is unpickled but data.
"""

from __future__ import annotations

import json
import math
import pathlib

import torch

from .registry import builder

FORMAT = 'aiida-mlresponse-model'
VERSION = 2


def _plain_json(value, what: str):
    """`value` as plain Python (a JSON round trip): numpy scalars pass `json.dumps` as floats but would be
    pickled as numpy objects, which a weights-only load refuses."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as error:
        raise TypeError(f'{what} must be JSON-able (plain numbers, strings, lists, dicts): {error}') from error


def save(path, model: torch.nn.Module, kind: str | None = None, hyperparameters: dict | None = None,
         metadata: dict | None = None, curves: dict | None = None) -> pathlib.Path:
    """Write `model` to `path`; kind and hyperparameters default to the model's attributes of those names."""
    kind = kind or getattr(model, 'kind')
    hyperparameters = hyperparameters if hyperparameters is not None else getattr(model, 'hyperparameters')
    builder(kind)  # fail now, not at load time, for an unregistered kind
    hyperparameters = _plain_json(hyperparameters, 'hyperparameters')
    metadata = _plain_json(metadata or {}, 'metadata')
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    payload = {
        'format': FORMAT, 'version': VERSION, 'kind': kind, 'hyperparameters': hyperparameters,
        'packed_state': pack(state), 'metadata': metadata or {},
        'curves': {name: {key: torch.as_tensor(value) for key, value in curve.items()}
                   for name, curve in (curves or {}).items()},
    }
    path = pathlib.Path(path)
    torch.save(payload, path)
    return path


def pack(state: dict) -> dict:
    """{name: tensor} -> names, shapes, dtypes and one flat tensor per dtype (see the module docstring)."""
    blobs = {}
    for tensor in state.values():
        blobs.setdefault(str(tensor.dtype).removeprefix('torch.'), []).append(tensor.reshape(-1))
    return {'names': list(state), 'shapes': [list(tensor.shape) for tensor in state.values()],
            'dtypes': [str(tensor.dtype).removeprefix('torch.') for tensor in state.values()],
            'blobs': {dtype: torch.cat(parts) for dtype, parts in blobs.items()}}


def unpack(packed: dict) -> dict:
    """The {name: tensor} of `pack` (views into the blobs)."""
    offsets = dict.fromkeys(packed['blobs'], 0)
    state = {}
    for name, shape, dtype in zip(packed['names'], packed['shapes'], packed['dtypes']):
        size = math.prod(shape)
        state[name] = packed['blobs'][dtype][offsets[dtype]:offsets[dtype] + size].view(shape)
        offsets[dtype] += size
    return state


def read(path) -> dict:
    """The checkpoint dict (weights-only unpickling), checked for the format, with its ``'state_dict'``."""
    payload = torch.load(pathlib.Path(path), map_location='cpu', weights_only=True)
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise ValueError(f'{path} is not an {FORMAT} file')
    if payload.get('version', 0) > VERSION:
        raise ValueError(f'{path} has format version {payload["version"]}, newer than this package ({VERSION})')
    if 'packed_state' in payload:
        payload['state_dict'] = unpack(payload.pop('packed_state'))
    elif 'state_dict' not in payload:
        raise ValueError(f'{path} holds no model state (neither packed_state nor state_dict)')
    return payload


def load(path):
    """(model in eval mode, checkpoint dict) from a file written by `save`."""
    payload = read(path)
    model = builder(payload['kind'])(payload['hyperparameters'])
    model.load_state_dict(payload['state_dict'])
    model.eval()
    return model, payload
