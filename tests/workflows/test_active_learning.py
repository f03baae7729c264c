"""ActiveLearningWorkChain with real ABINIT (test protocol) and real training: rounds, decisions on record, stop rules."""

import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.sampling import acquisition as acq
from aiida_mlresponse.workflows import al_steps
from aiida_mlresponse.workflows.active_learning import ActiveLearningWorkChain
from aiida_mlresponse.workflows.labels import sample_displacement_configurations

MG_TEST_EXPORT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'data' / 'mg_test_182.npz'
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
                          budget=orm.Int(20), trust=orm.Dict({'lo': 0.0, 'hi': 1e12, 'mode': 'calibrated'}))
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
    # calibrated mode: round 1 has nothing to calibrate on; round 2 fits spread -> error on round 1's two picks
    assert first['calibration'] is None and first['trust']['unit'] == 'spread / label scale'
    second = scored[1].outputs.decisions.get_dict()
    assert second['calibration']['rows'] == 2 and second['calibration']['factor'] > 0
    assert second['trust']['unit'] == 'expected relative error'



_START = {}


@pytest.fixture
def bn_start(abinit_code, pseudo_families, bn_structure):
    """Five labelled BN configurations (and the reference's labels), computed once per test session."""
    from aiida_mlresponse.workflows.labels import LabelsWorkChain

    if not _START:
        initial = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(5), orm.Int(1))
        results, node = run_get_node(LabelsWorkChain.get_builder_from_protocol(
            abinit_code, initial, 'response', reference=bn_structure, protocol='test'))
        assert node.is_finished_ok, node.exit_status
        _START.update(dataset=results['dataset'].pk, reference_arrays=results['reference_arrays'].pk)
    return orm.load_node(_START['dataset']), orm.load_node(_START['reference_arrays'])


def started_campaign(abinit_code, python_code, bn_structure, bn_start, pool, **settings):
    builder = bn_campaign(abinit_code, python_code, bn_structure, targets=orm.List(['dielectric']), pool=pool, **settings)
    builder.pop('initial')
    builder.dataset, builder.labelling.reference_arrays = bn_start
    return builder


def bn_pool(bn_structure, count=30, too_close=False):
    pool = sample_displacement_configurations(bn_structure, orm.Float(0.03), orm.Int(count), orm.Int(3))
    if not too_close:
        return pool
    positions = pool.get_array('positions')
    positions[0, 1] = positions[0, 0] + [0.2, 0.0, 0.0]  # 0.2 Å apart: no ABINIT run may start from this
    bad = orm.ArrayData()
    bad.set_array('positions', positions)
    return bad


@pytest.mark.slow
@pytest.mark.parametrize('settings, reason', [
    ({'budget': 5}, 'budget spent'),
    ({'trust': {'lo': 1e12, 'hi': 1e13}}, 'accurate ratio'),
    ({'trust': {'lo': 0.0, 'hi': 1e-12}, 'accurate_ratio': 1.0}, 'no candidate left'),
])
def test_stop_rules_after_one_round(abinit_code, python_code, bn_structure, bn_start, settings, reason):
    pool = bn_pool(bn_structure, too_close=True)
    nodes = {int: orm.Int, float: orm.Float, dict: orm.Dict}
    settings = {key: nodes[type(value)](value) for key, value in settings.items()}
    results, node = run_get_node(started_campaign(abinit_code, python_code, bn_structure, bn_start, pool, **settings))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['stop_reason'].value.startswith(reason)
    assert not [n for n in node.called if n.process_label == 'LabelsWorkChain']  # no ABINIT run
    decisions = [n for n in node.called if n.process_label == 'score_pool'][0].outputs.decisions.get_dict()
    assert decisions['pool'] == 30 and sum(decisions['counts'].values()) == 30
    if reason != 'accurate ratio':  # a learned candidate is not checked against the physics rules
        assert decisions['rejected'] == [{'configuration_index': 5, 'reasons': ['atoms 0.200 apart < 0.5']}]
    assert results['rounds'].get_dict()['rounds'][0]['labels'] == 5


@pytest.mark.slow
def test_property_convergence_stops_and_every_label_is_explained(abinit_code, python_code, bn_structure, bn_start):
    from aiida_mlresponse.workflows.provenance import campaign_rounds, why_labelled

    builder = started_campaign(abinit_code, python_code, bn_structure, bn_start, bn_pool(bn_structure),
                               batch_size=orm.Int(1), max_rounds=orm.Int(4), property_tolerance=orm.Float(1e6),
                               trust=orm.Dict({'lo': 1e-9, 'hi': 1e9}))
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['stop_reason'].value.startswith('property converged')
    dataset = results['dataset']
    assert dataset.size == 6
    pick = int(dataset.get_array('configuration_index')[-1])
    answer = why_labelled(dataset, pick)
    assert answer['reason'] == 'active learning pick' and answer['campaign'] == node.pk and answer['round'] == 1
    assert answer['rank'] == 0 and answer['rule'].startswith('highest score')
    initial = why_labelled(dataset, 0)
    assert initial['reason'] == 'sampled by sample_displacement_configurations' and initial['sampler_inputs']['seed'] == 1
    rounds = campaign_rounds(node)
    assert [r['round'] for r in rounds] == [1, 2] and 0 <= rounds[0]['overhead_fraction'] <= 1

    from click.testing import CliRunner

    from aiida_mlresponse.cli import cli

    shown = CliRunner().invoke(cli, ['campaign', 'show', str(node.pk)])
    assert shown.exit_code == 0 and 'property converged' in shown.output, shown.output
    assert [line.split()[0] for line in shown.output.splitlines()[2:]] == ['1', '2']
    why = CliRunner().invoke(cli, ['campaign', 'why', str(dataset.pk), str(pick)])
    assert why.exit_code == 0 and 'active learning pick' in why.output, why.output


TINY_PCAMLP = {'hyperparameters': {'n_members': 2, 'pca_components': 3, 'scalar_hidden': [8], 'field_hidden': [8]},
               'epochs': 20, 'lbfgs_iterations': 10, 'field_epochs': 10, 'field_lbfgs_iterations': 10, 'log_every': 10}


@pytest.mark.slow
def test_two_round_mg_campaign(abinit_code, pseudo_families, python_code):
    from aiida_mlresponse.workflows.labels import sample_deformation_configurations
    from aiida_mlresponse.workflows.provenance import campaign_rounds

    builder = ActiveLearningWorkChain.get_builder()
    builder.labelling.code = abinit_code
    builder.labelling.protocol = orm.Str('test')
    builder.labelling.warm_start = orm.Bool(True)
    builder.model_kind = orm.Str('pcamlp')
    builder.hyperparameters = orm.Dict(TINY_PCAMLP)
    builder.training_code = python_code
    builder.initial = sample_deformation_configurations(orm.Int(5), orm.Int(11), orm.Float(0.03), orm.Float(2.0))
    # the pool also holds two cells too large for the test protocol's fixed FFT grid: rejected, never labelled
    sampled = sample_deformation_configurations(orm.Int(40), orm.Int(12), orm.Float(0.05), orm.Float(3.0))
    pool = orm.ArrayData()
    pool.set_array('deformations', np.concatenate([sampled.get_array('deformations'),
                                                   [[1.0, 1.3, 1.0, 90.0, 90.0, 90.0], [1.25, 1.0, 1.25, 90.0, 90.0, 90.0]]]))
    builder.pool = pool
    builder.batch_size = orm.Int(2)
    builder.max_rounds = orm.Int(1)
    builder.trust = orm.Dict({'lo': 1e-9, 'hi': 1e9})
    builder.selection = orm.Dict({'instability_share': 0.5, 'min_separation': 0.0})  # one pick by spread, one by the softest mode
    # held-out labels (the committed `test`-protocol export): every round's record carries its test errors
    builder.test_dataset = DatasetData.from_npz(MG_TEST_EXPORT).store()
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['stop_reason'].value.startswith('round limit')
    dataset = results['dataset']
    assert dataset.kind == 'mg_strain' and dataset.size == 7 and set(results['models']) == {'pcamlp'}
    rounds = campaign_rounds(node)
    assert len(rounds) == 2  # round 1 labels two picks, round 2 trains on all and stops
    for row in rounds:
        errors = row['test_errors']
        assert errors['rows'] == 182 and 0 < errors['free_energy']['mae'] <= errors['free_energy']['max']
    assert rounds[0]['test_errors'] != rounds[1]['test_errors']  # round 2's model, not round 1's, was tested
    # round 2 warm-starts from round 1's model (the pcamlp default), with the link on record
    first, second = sorted((n for n in node.called if n.process_label == 'TrainingCalculation'), key=lambda n: n.ctime)
    assert 'parent_model' not in first.inputs and second.inputs.parent_model.uuid == first.outputs.model.uuid
    assert 'warm start from parent.pt' in second.outputs.retrieved.base.repository.get_object_content('training.log')
    decisions = [n for n in node.called if n.process_label == 'score_pool'][0].outputs.decisions.get_dict()
    assert set(decisions['scales']) == {'free_energy', 'R'} and len(decisions['picks']) == 2
    assert [p['rule'] for p in decisions['picks']] == [acq.SPREAD_RULE, acq.INSTABILITY_RULE]
    scores = [n for n in node.called if n.process_label == 'score_pool'][0].outputs.scores
    stiffness = scores.get_array('relative_stiffness')
    eligible = scores.get_array('partition') == al_steps.PARTITION_CODES[acq.CANDIDATE]
    index = scores.get_array('configuration_index')
    eligible &= index != decisions['picks'][0]['configuration_index']
    assert decisions['picks'][1]['relative_stiffness'] == pytest.approx(stiffness[eligible].min())  # the softest one left
    # the picks are the deformations of the pool rows they name
    pool = [n for n in node.called if n.process_label == 'index_pool'][0].outputs.result
    assert [r['configuration_index'] for r in decisions['rejected']] == pool.get_array('configuration_index')[-2:].tolist()
    assert all('FFT grid' in r['reasons'][0] for r in decisions['rejected'])
    picked = [p['configuration_index'] for p in decisions['picks']]
    rows = [int(np.flatnonzero(pool.get_array('configuration_index') == i)[0]) for i in picked]
    labelled = dataset.get_array('configuration_index').tolist()
    np.testing.assert_allclose(dataset.get_array('deformation')[[labelled.index(i) for i in picked]],
                               pool.get_array('deformations')[rows], atol=1e-8)


def test_a_bad_instability_share_is_refused_before_anything_runs():
    from aiida_mlresponse.workflows.active_learning import validate_inputs

    inputs = {'model_kind': orm.Str('pcamlp'), 'initial': orm.ArrayData(), 'selection': orm.Dict({'instability_share': 1.5})}
    assert 'instability_share' in validate_inputs(inputs, None)
    inputs['selection'] = orm.Dict({'instability_share': 0.25})
    assert validate_inputs(inputs, None) is None
