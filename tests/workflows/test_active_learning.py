"""ActiveLearningWorkChain with real ABINIT (test protocol) and real training: rounds, decisions on record, stop rules."""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.active_learning import ActiveLearningWorkChain
from aiida_mlresponse.workflows.labels import sample_displacement_configurations

TINY_RADNET = {'n_members': 2, 'seed': 1, 'training': {'epochs': 2, 'log_every': 1}}


def bn_campaign(abinit_code, python_code, bn_structure, **settings):
    builder = ActiveLearningWorkChain.get_builder()
    builder.labelling.code = abinit_code
    builder.labelling.reference = bn_structure
    builder.labelling.protocol = orm.Str('test')
    builder.model_kind = orm.Str('radnet')
    builder.hyperparameters = orm.Dict(TINY_RADNET)
    builder.training_code = python_code
    builder.initial = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(5), orm.Int(1))
    builder.pool = sample_displacement_configurations(bn_structure, orm.Float(0.03), orm.Int(40), orm.Int(2))
    for key, value in settings.items():
        builder[key] = value
    return builder


@pytest.mark.slow
def test_two_round_bn_campaign_records_every_decision(abinit_code, pseudo_families, python_code, bn_structure):
    builder = bn_campaign(abinit_code, python_code, bn_structure, batch_size=orm.Int(2), max_rounds=orm.Int(2),
                          budget=orm.Int(20), trust=orm.Dict({'lo': 1e-6, 'hi': 1e6}))
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['stop_reason'].value.startswith('round limit')
    dataset = results['dataset']
    assert dataset.size == 5 + 2 + 2
    rounds = results['rounds'].get_dict()['rounds']
    assert [r['round'] for r in rounds] == [1, 2, 3] and [r['labels'] for r in rounds] == [7, 9, 9]
    assert set(results['models']) == {'polarization', 'dielectric'}

    # every pick is on record with its rank and score, and it is in the dataset with its pool index
    scored = [n for n in node.called if n.process_label == 'score_pool']
    assert len(scored) == 3
    picks = [p['configuration_index'] for n in scored[:2] for p in n.outputs.decisions['picks']]
    assert sorted(picks) == sorted(dataset.get_array('configuration_index')[5:].tolist())
    assert min(picks) >= 5  # pool indices start past the initial ones
    first = scored[0].outputs.decisions.get_dict()
    assert [p['rank'] for p in first['picks']][0] == 0 and first['picks'][0]['score'] >= first['picks'][1]['score']

