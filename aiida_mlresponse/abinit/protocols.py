"""Protocols in YAML: load a file, pick a protocol, merge the entry of the matching system, then overrides.

Generic over the YAML file (the response and the Mg workflows each have their own); the schema is
documented at the top of `protocols/response.yaml`:

    default_protocol: <name>
    protocols:
      <name>:
        description: ...
        default: {...}                         # any structure
        systems:
          <system>: {elements: [..], ...}      # deep-merged over `default` when the element sets match

`get_protocol_inputs(path, protocol, overrides, elements)` returns the resolved dictionary.
"""

from __future__ import annotations

import copy
import functools
import pathlib
from collections.abc import Iterable, Mapping

import yaml

PROTOCOL_DIR = pathlib.Path(__file__).parent / 'protocols'
RESPONSE_PROTOCOLS = PROTOCOL_DIR / 'response.yaml'


class ProtocolError(ValueError):
    """An unknown protocol, or a protocol file that does not follow the schema."""


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> dict:
    with open(path, encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or not isinstance(data.get('protocols'), dict) or not data['protocols']:
        raise ProtocolError(f'{path}: a protocol file needs a `protocols` mapping with at least one protocol.')
    default = data.get('default_protocol')
    if default is not None and default not in data['protocols']:
        raise ProtocolError(f'{path}: default_protocol `{default}` is not one of {sorted(data["protocols"])}.')
    return data


def load_protocols(path=RESPONSE_PROTOCOLS) -> dict:
    """The parsed protocol file (cached while the file is unchanged); callers get a copy."""
    path = pathlib.Path(path)
    return copy.deepcopy(_load(str(path), path.stat().st_mtime))


def available_protocols(path=RESPONSE_PROTOCOLS) -> dict[str, str]:
    """name -> description."""
    return {name: entry.get('description', '') for name, entry in load_protocols(path)['protocols'].items()}


def default_protocol(path=RESPONSE_PROTOCOLS) -> str:
    data = load_protocols(path)
    return data.get('default_protocol') or next(iter(data['protocols']))


def recursive_merge(base: Mapping, update: Mapping) -> dict:
    """A new dict: `update` merged into `base`, nested mappings merged key by key, everything else replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = recursive_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def match_system(systems: Mapping, elements: Iterable[str]) -> str | None:
    """The name of the system entry whose `elements` are exactly the given set, or None."""
    wanted = set(elements)
    for name, entry in systems.items():
        if set(entry.get('elements', [])) == wanted:
            return name
    return None


def get_protocol_inputs(path=RESPONSE_PROTOCOLS, protocol: str | None = None, overrides: Mapping | None = None,
                        elements: Iterable[str] | None = None) -> dict:
    """The resolved inputs of `protocol`: its `default`, then the matching system entry, then `overrides`.

    The result carries `protocol` and `system` (None for the generic default) for provenance.
    Raises `ProtocolError` for an unknown protocol name, listing the known ones.
    """
    data = load_protocols(path)
    name = protocol if protocol is not None else default_protocol(path)
    if name not in data['protocols']:
        raise ProtocolError(
            f'unknown protocol `{name}`; choose one of: {", ".join(data["protocols"])}.'
        )
    entry = data['protocols'][name]
    inputs = copy.deepcopy(entry.get('default', {}))
    system = match_system(entry.get('systems', {}), elements) if elements is not None else None
    if system is not None:
        specific = {key: value for key, value in entry['systems'][system].items() if key != 'elements'}
        inputs = recursive_merge(inputs, specific)
    if overrides:
        inputs = recursive_merge(inputs, overrides)
    inputs['protocol'] = name
    inputs['system'] = system
    return inputs
