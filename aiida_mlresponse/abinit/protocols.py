"""Protocols in YAML: one loader and one schema for every protocol file (protocols/*.yaml).

Schema (each key of an entry fills the work-chain input of the same name):

    default_protocol: <name>
    protocols:
      <name>:
        description: <text>
        pseudo_family: <label of an installed aiida-pseudo family>
        kpoints: {mesh: [n1, n2, n3] | distance: <1/Å>, shifts: gamma | fcc4 | [[s1, s2, s3], ...],
                  polarization_mesh_factor: <int>}   # response only: P also on a f x denser mesh, extrapolated
        parameters: {<ABINIT variable>: <value>, ...}
        options: {<metadata.options of the CalcJob>: ...}
        max_iterations: <int>          # of the restart work chain
        clean_workdir: <bool>
        systems:                        # optional: deep-merged over the entry when the element sets match
          <system>: {elements: [..], <any input key above>}

`get_protocol_inputs(path, protocol, overrides, elements)` returns the resolved inputs: the protocol's
entry, then its matching system, then `overrides` (any input key above), each deep-merged.
An unknown key (in a file or in the overrides) is refused with a message naming the known ones.
"""

from __future__ import annotations

import copy
import functools
import pathlib
from collections.abc import Iterable, Mapping

import yaml

PROTOCOL_DIR = pathlib.Path(__file__).parent / 'protocols'
RESPONSE_PROTOCOLS = PROTOCOL_DIR / 'response.yaml'
MG_PROTOCOLS = PROTOCOL_DIR / 'mg.yaml'

INPUT_KEYS = ('pseudo_family', 'kpoints', 'parameters', 'options', 'max_iterations', 'clean_workdir')
KPOINT_KEYS = ('mesh', 'distance', 'shifts', 'polarization_mesh_factor')
FCC_SHIFTS = [[0.5, 0.5, 0.5], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]  # ABINIT's fcc four-shift set


class ProtocolError(ValueError):
    """An unknown protocol or key, or a protocol file that does not follow the schema."""


def check_keys(entry: Mapping, known: Iterable[str], where: str) -> None:
    """Raise `ProtocolError` naming the known keys when `entry` has another one (`kpoints` checked too)."""
    known = tuple(known)
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ProtocolError(f'{where}: unknown key(s) {unknown}; the known keys are {", ".join(known)}.')
    if isinstance(entry.get('kpoints'), Mapping):
        check_keys(entry['kpoints'], KPOINT_KEYS, f'{where}: kpoints')


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> dict:
    with open(path, encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or not isinstance(data.get('protocols'), dict) or not data['protocols']:
        raise ProtocolError(f'{path}: a protocol file needs a `protocols` mapping with at least one protocol.')
    check_keys(data, ('default_protocol', 'protocols'), path)
    default = data.get('default_protocol')
    if default is not None and default not in data['protocols']:
        raise ProtocolError(f'{path}: default_protocol `{default}` is not one of {sorted(data["protocols"])}.')
    for name, entry in data['protocols'].items():
        check_keys(entry, ('description', 'systems', *INPUT_KEYS), f'{path}: protocol `{name}`')
        for system, specific in entry.get('systems', {}).items():
            check_keys(specific, ('elements', *INPUT_KEYS), f'{path}: protocol `{name}`, system `{system}`')
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
    """The resolved inputs of `protocol`: its entry, then the matching system entry, then `overrides`.

    The result carries `protocol` and `system` (None when no system entry matched) for provenance.
    Raises `ProtocolError` for an unknown protocol name or override key, listing the known ones.
    """
    data = load_protocols(path)
    name = protocol if protocol is not None else default_protocol(path)
    if name not in data['protocols']:
        raise ProtocolError(
            f'unknown protocol `{name}`; choose one of: {", ".join(data["protocols"])}.'
        )
    check_keys(overrides or {}, INPUT_KEYS, 'overrides')
    entry = data['protocols'][name]
    systems = entry.pop('systems', {})
    inputs = {key: value for key, value in entry.items() if key != 'description'}
    system = match_system(systems, elements) if elements is not None else None
    if system is not None:
        specific = {key: value for key, value in systems[system].items() if key != 'elements'}
        inputs = recursive_merge(inputs, specific)
    if overrides:
        inputs = recursive_merge(inputs, overrides)
    inputs['protocol'] = name
    inputs['system'] = system
    return inputs


def kpoints_from_protocol(structure, spec: Mapping):
    """(KpointsData, settings) from a protocol's `kpoints` entry: `mesh` or `distance`, and `shifts`."""
    from aiida import orm

    kpoints = orm.KpointsData()
    kpoints.set_cell_from_structure(structure)
    shifts = spec.get('shifts', 'gamma')
    if shifts == 'gamma':
        shift_list = [[0.0, 0.0, 0.0]]
    elif shifts == 'fcc4':
        shift_list = [list(shift) for shift in FCC_SHIFTS]
    elif isinstance(shifts, list) and shifts and all(isinstance(s, list) and len(s) == 3 for s in shifts):
        shift_list = [[float(x) for x in s] for s in shifts]
    else:
        raise ProtocolError(f'k-point `shifts` must be `gamma`, `fcc4` or a list of 3-vectors, got {shifts!r}.')
    if 'mesh' in spec:
        mesh = [int(n) for n in spec['mesh']]
        if len(mesh) != 3 or min(mesh) < 1:
            raise ProtocolError(f'k-point `mesh` must be three positive integers, got {spec["mesh"]!r}.')
        kpoints.set_kpoints_mesh(mesh, offset=shift_list[0])
    elif 'distance' in spec:
        kpoints.set_kpoints_mesh_from_density(float(spec['distance']), offset=shift_list[0])
    else:
        raise ProtocolError('a protocol `kpoints` entry needs `mesh` or `distance`.')
    settings = {'kpoint_shifts': shift_list} if len(shift_list) > 1 else {}
    factor = spec.get('polarization_mesh_factor', 1)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ProtocolError(f'k-point `polarization_mesh_factor` must be a positive integer, got {factor!r}.')
    if factor > 1:
        settings['polarization_mesh_factor'] = factor
    return kpoints, settings
