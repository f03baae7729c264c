"""Every protocol's builder (BN and GaAs response labels, strained Mg relaxation) equals its recorded snapshot.

The snapshot was recorded with the code before the protocol loaders were merged into one, so this proves
the refactor left every ABINIT input unchanged. Rewrite it only for an intended change:
`MLRESPONSE_UPDATE_SNAPSHOTS=1 pytest tests/abinit/test_protocol_snapshots.py`.
"""

import json
import os

from tests.abinit.protocol_snapshot import SNAPSHOT_FILE, all_snapshots


def test_protocol_builders_match_the_recorded_snapshot(abinit_code, bn_structure, gaas_structure, pseudo_families):
    from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain

    structures = {'BN': bn_structure, 'GaAs': gaas_structure}
    snapshots = all_snapshots(abinit_code, AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain, structures)
    if os.environ.get('MLRESPONSE_UPDATE_SNAPSHOTS'):
        SNAPSHOT_FILE.write_text(json.dumps(snapshots, indent=1, sort_keys=True) + '\n')
    recorded = json.loads(SNAPSHOT_FILE.read_text())
    assert sorted(snapshots) == sorted(recorded)
    for key in recorded:
        for part in recorded[key]:
            assert snapshots[key][part] == recorded[key][part], f'{key}: `{part}` changed'
