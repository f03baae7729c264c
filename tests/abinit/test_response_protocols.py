"""Protocol YAML loading and merging (generic), and the shipped response protocols' schema."""

import numpy as np
import pytest

from aiida_mlresponse.abinit.protocols import (
    RESPONSE_PROTOCOLS, ProtocolError, available_protocols, get_protocol_inputs, load_protocols, recursive_merge,
)

GENERIC = """
default_protocol: quick
protocols:
  quick:
    description: cheap
    pseudo_family: fam/a
    parameters: {ecut: 10, nstep: 20}
    kpoints: {distance: 0.4, shifts: gamma}
    systems:
      MgO:
        elements: [Mg, O]
        parameters: {ecut: 30}
        kpoints: {mesh: [4, 4, 4]}
  slow:
    description: careful
    pseudo_family: fam/b
    parameters: {ecut: 50}
"""


@pytest.fixture
def generic(tmp_path):
    path = tmp_path / 'other.yaml'
    path.write_text(GENERIC)
    return path


def test_generic_file_merge_order(generic):
    inputs = get_protocol_inputs(generic, None, overrides={'parameters': {'nstep': 99}}, elements=['O', 'Mg'])
    assert inputs['protocol'] == 'quick' and inputs['system'] == 'MgO'
    # default < system < overrides, merged key by key
    assert inputs['parameters'] == {'ecut': 30, 'nstep': 99}
    assert inputs['kpoints'] == {'distance': 0.4, 'shifts': 'gamma', 'mesh': [4, 4, 4]}
    assert 'elements' not in inputs
    other = get_protocol_inputs(generic, 'quick', elements=['Si'])
    assert other['system'] is None and other['parameters'] == {'ecut': 10, 'nstep': 20}
    assert get_protocol_inputs(generic, 'slow')['pseudo_family'] == 'fam/b'
    assert available_protocols(generic) == {'quick': 'cheap', 'slow': 'careful'}


def test_unknown_protocol_lists_the_known_ones(generic):
    with pytest.raises(ProtocolError, match='unknown protocol `precise`; choose one of: quick, slow'):
        get_protocol_inputs(generic, 'precise')


def test_bad_protocol_files(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('protocols: {}\n')
    with pytest.raises(ProtocolError, match='at least one protocol'):
        load_protocols(path)
    path.write_text('default_protocol: x\nprotocols: {a: {parameters: {}}}\n')
    with pytest.raises(ProtocolError, match='default_protocol `x`'):
        load_protocols(path)
    # The old schema (inputs under `default`) and misspelt keys are refused, naming the known keys.
    path.write_text('protocols: {a: {default: {parameters: {}}}}\n')
    with pytest.raises(ProtocolError, match=r"protocol `a`: unknown key\(s\) \['default'\]; the known keys are description, "):
        load_protocols(path)
    path.write_text('protocols: {a: {kpoints: {mesh: [1, 1, 1], shift: gamma}}}\n')
    with pytest.raises(ProtocolError, match=r"kpoints: unknown key\(s\) \['shift'\]; the known keys are mesh, distance, shifts"):
        load_protocols(path)


@pytest.mark.parametrize('overrides, unknown', [
    ({'parameter': {'ecut': 20}}, 'parameter'),
    ({'kpoints': {'meshes': [2, 2, 2]}}, 'meshes'),
    ({'metadata': {'options': {}}}, 'metadata'),
])
def test_unknown_override_key_refused_naming_the_known_ones(generic, overrides, unknown):
    known = 'mesh, distance, shifts, polarization_mesh_factor' if unknown == 'meshes' else (
        'pseudo_family, kpoints, parameters, options, max_iterations, clean_workdir')
    with pytest.raises(ProtocolError, match=rf"unknown key\(s\) \['{unknown}'\]; the known keys are {known}\."):
        get_protocol_inputs(generic, 'quick', overrides=overrides)


def test_recursive_merge_does_not_touch_its_arguments():
    base = {'a': {'b': 1, 'c': [1, 2]}, 'd': 1}
    update = {'a': {'c': [3]}, 'e': {'f': 2}}
    merged = recursive_merge(base, update)
    assert merged == {'a': {'b': 1, 'c': [3]}, 'd': 1, 'e': {'f': 2}}
    assert base == {'a': {'b': 1, 'c': [1, 2]}, 'd': 1}
    merged['a']['b'] = 5
    assert base['a']['b'] == 1


def test_shipped_response_protocols_follow_the_schema():
    data = load_protocols(RESPONSE_PROTOCOLS)
    assert set(data['protocols']) == {'test', 'fast', 'moderate', 'precise'}
    assert data['default_protocol'] in data['protocols']
    for name in data['protocols']:
        for system, elements in [('BN', ['B', 'N']), ('GaAs', ['Ga', 'As'])]:
            inputs = get_protocol_inputs(RESPONSE_PROTOCOLS, name, elements=elements)
            assert inputs['system'] == system
            assert inputs['pseudo_family'].startswith('mlresponse/')
            assert inputs['parameters']['ecut'] > 0
            # Physics check of METHODS.md: a symmetric grid (Γ-centred or the fcc four-shift set).
            assert inputs['kpoints']['shifts'] in ('gamma', 'fcc4')
            assert len(inputs['kpoints'].get('mesh', [0, 0, 0])) == 3 and ('mesh' in inputs['kpoints'] or 'distance' in inputs['kpoints'])
            for dataset in (1, 2, 3):
                assert any(f'{tol}{dataset}' in inputs['parameters'] for tol in ('tolvrs', 'tolwfr', 'toldfe'))
        generic = get_protocol_inputs(RESPONSE_PROTOCOLS, name, elements=['Mg', 'O'])
        assert generic['system'] is None and 'distance' in generic['kpoints']


def test_kpoints_from_protocol(aiida_profile, bn_structure):
    from aiida_mlresponse.abinit.protocols import FCC_SHIFTS, kpoints_from_protocol

    kpoints, settings = kpoints_from_protocol(bn_structure, {'mesh': [4, 4, 4], 'shifts': 'fcc4'})
    assert list(kpoints.get_kpoints_mesh()[0]) == [4, 4, 4] and settings == {'kpoint_shifts': FCC_SHIFTS}
    kpoints, settings = kpoints_from_protocol(bn_structure, {'distance': 0.3})
    mesh, offset = kpoints.get_kpoints_mesh()
    reciprocal_lengths = np.linalg.norm(2 * np.pi * np.linalg.inv(np.array(bn_structure.cell)).T, axis=1)
    assert all(n >= length / 0.3 - 1e-9 for n, length in zip(mesh, reciprocal_lengths))
    assert list(offset) == [0.0, 0.0, 0.0] and settings == {}
    with pytest.raises(ProtocolError, match='shifts'):
        kpoints_from_protocol(bn_structure, {'mesh': [2, 2, 2], 'shifts': 'half'})
    with pytest.raises(ProtocolError, match='`mesh` or `distance`'):
        kpoints_from_protocol(bn_structure, {'shifts': 'gamma'})
