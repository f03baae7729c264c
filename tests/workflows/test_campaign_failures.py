"""A pick whose ABINIT run fails: left out with its reason on record, the campaign carries on; too many stop it (485).

Mg relaxations with one BFGS step, no restart and tolmxf 6e-4 Ha/Bohr (as in test_labels): the reference cell
starts with a max force of 4.8e-4 and converges, strained cells start above it and fail, deterministically.
"""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.active_learning import ActiveLearningWorkChain
from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_deformation_configurations

from .test_active_learning import TINY_PCAMLP
from .test_labels import REFERENCE, STRAINED, array_data

FAILING = {'parameters': {'ntime': 1, 'tolmxf': 6.0e-4}, 'max_iterations': 1}


def mg_campaign(abinit_code, python_code, dataset, pool, **settings):
    builder = ActiveLearningWorkChain.get_builder()
    builder.labelling.code = abinit_code
    builder.labelling.protocol = orm.Str('test')
    builder.labelling.overrides = orm.Dict(FAILING)
    builder.model_kind = orm.Str('pcamlp')
    builder.hyperparameters = orm.Dict(TINY_PCAMLP)
    builder.training_code = python_code
    builder.dataset = dataset
    builder.pool = array_data(deformations=pool)
    builder.batch_size = orm.Int(2)
    builder.max_rounds = orm.Int(2)
    builder.trust = orm.Dict({'lo': 1e-9, 'hi': 1e9})
    for key, value in settings.items():
        builder[key] = value
    return builder


def reports(node):
    return [log.message for log in orm.Log.collection.get_logs_for(node)]


@pytest.mark.slow
def test_failed_label_left_out_with_reason_and_too_many_stop_the_campaign(abinit_code, pseudo_families, python_code):
    from aiida.common.log import configure_logging
    from aiida.manage.caching import enable_caching

    # reports go to the database through the ORM log handler, as under `verdi run` and the daemon (an
    # earlier test in the session may have configured logging without it)
    configure_logging(with_orm=True)

    # four labels to start from, at the plain test protocol (they all converge)
    initial = sample_deformation_configurations(orm.Int(4), orm.Int(11), orm.Float(0.03), orm.Float(2.0))
    results, node = run_get_node(LabelsWorkChain.get_builder_from_protocol(abinit_code, initial, 'mg_strain', protocol='test'))
    assert node.is_finished_ok, node.exit_status
    start = results['dataset']

    # round 1 picks both pool rows (indices 4, 5): the reference converges, the strained cell fails
    results, node = run_get_node(mg_campaign(abinit_code, python_code, start, [REFERENCE, STRAINED]))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    labelling = [n for n in node.called if n.process_label == 'LabelsWorkChain']
    assert len(labelling) == 1 and labelling[0].is_finished_ok
    failed = labelling[0].outputs.failed.get_dict()
    assert list(failed) == ['5'] and failed['5']['exit_status'] != 0 and failed['5']['message'], failed
    np.testing.assert_allclose(failed['5']['deformations'], STRAINED)
    assert orm.load_node(failed['5']['pk']).exit_status == failed['5']['exit_status']
    reason = f'configuration 5 left out: exit {failed["5"]["exit_status"]} {failed["5"]["message"]}'
    assert any(reason in m for m in reports(node)), reports(node)
    dataset = results['dataset']
    assert dataset.size == 5 and dataset.get_array('configuration_index').tolist()[-1] == 4
    # the campaign carried on: round 2 trained on the five labels and scored a pool without the failed row
    rounds = results['rounds'].get_dict()['rounds']
    assert [r['round'] for r in rounds] == [1, 2] and rounds[1]['labels'] == 5
    scored = [n for n in node.called if n.process_label == 'score_pool']
    assert len(scored) == 2 and scored[1].outputs.decisions['pool'] == 1  # the failed row is out of the pool
    assert results['stop_reason'].value.startswith('accurate ratio'), results['stop_reason'].value  # nothing left

    # the same round allowed fewer failures: the campaign stops with 485 and names the failure (its training and
    # ABINIT runs are the first campaign's, from the cache)
    with enable_caching(identifier='aiida.calculations:mlresponse.*'):
        results, node = run_get_node(mg_campaign(abinit_code, python_code, start, [REFERENCE, STRAINED],
                                                 max_failed_fraction=orm.Float(0.4)))
    assert node.exit_status == ActiveLearningWorkChain.exit_codes.ERROR_TOO_MANY_FAILED_LABELS.status
    assert node.exit_message == 'Round 1: 1 of 2 labels failed.'
    assert any(reason in m for m in reports(node)), reports(node)
    assert 'dataset' not in node.outputs
