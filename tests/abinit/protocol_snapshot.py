"""What a protocol builder produces, as plain JSON: the recorded snapshot and the test that compares to it.

`snapshot(builder)` is everything the builder would submit (ABINIT variables, k-points, pseudos by file
and md5, options, restart settings) plus the ABINIT input file the CalcJob writes (dry run).
"""

from __future__ import annotations

import json
import pathlib

SNAPSHOT_FILE = pathlib.Path(__file__).parent / 'snapshots' / 'protocol_builders.json'
PROTOCOLS = ('test', 'fast', 'moderate', 'precise')
SERIAL_DEFAULTS = {'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1}, 'withmpi': False}
MG_DEFORMATION = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]


def _plain(value):
    from aiida import orm

    if isinstance(value, orm.Dict):
        return value.get_dict()
    if isinstance(value, (orm.Int, orm.Bool, orm.Str, orm.Float)):
        return value.value
    if isinstance(value, orm.KpointsData):
        mesh, offset = value.get_kpoints_mesh()
        return {'mesh': [int(n) for n in mesh], 'offset': [float(x) for x in offset]}
    if isinstance(value, orm.StructureData):
        return {'cell': value.cell, 'positions': [site.position for site in value.sites],
                'kinds': [site.kind_name for site in value.sites]}
    if isinstance(value, orm.AbstractCode):
        return 'code'
    if hasattr(value, 'md5') and hasattr(value, 'filename'):
        return {'filename': value.filename, 'md5': value.md5, 'element': value.element}
    if isinstance(value, dict) or hasattr(value, 'items'):
        return {key: _plain(item) for key, item in sorted(value.items()) if item is not None and item != {}}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def input_file(process_class, inputs) -> str:
    """The ABINIT input file `process_class` writes for `inputs` (dry run: nothing runs, nothing is stored)."""
    from aiida.engine import run_get_node

    inputs = dict(inputs)
    inputs['metadata'] = {**dict(inputs.get('metadata', {})), 'dry_run': True, 'store_provenance': False}
    _, node = run_get_node(process_class, **inputs)
    folder = pathlib.Path(node.dry_run_info['folder'])
    return (folder / 'aiida.abi').read_text()


def snapshot(builder) -> dict:
    inputs = {key: builder.abinit[key] for key in builder.abinit if key != 'metadata'}
    result = {
        'abinit': _plain(inputs),
        # The options as the CalcJob runs them: its serial defaults, then what the builder sets.
        'options': _plain({**SERIAL_DEFAULTS, **dict(builder.abinit.metadata.options)}),
        'workchain': _plain({key: builder[key] for key in ('max_iterations', 'clean_workdir') if key in builder}),
        'label': builder.metadata.get('label'),
        'input_file': input_file(builder.process_class._process_class, dict(builder.abinit)),
    }
    return json.loads(json.dumps(result))


def all_snapshots(code, response_workchain, relax_workchain, structures) -> dict:
    """{'<system>/<protocol>': snapshot} for BN and GaAs response labels and the strained Mg relaxation."""
    from aiida_mlresponse.abinit.mg import install_seed_family

    install_seed_family()
    result = {}
    for protocol in PROTOCOLS:
        for system, structure in structures.items():
            builder = response_workchain.get_builder_from_protocol(code, structure, protocol=protocol)
            result[f'{system}/{protocol}'] = snapshot(builder)
        builder = relax_workchain.get_builder_from_protocol(code, deformation=MG_DEFORMATION, protocol=protocol)
        result[f'Mg/{protocol}'] = snapshot(builder)
    return result
