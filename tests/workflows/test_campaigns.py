"""The ready-made campaigns: starting from earlier labels, and the launch options that name datasets."""

import pathlib

import pytest
from aiida import orm

from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.workflows.active_learning import validate_inputs
from aiida_mlresponse.workflows.campaigns import campaign_builder, load_dataset

MG_EXPORT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'data' / 'mg_test_182.npz'


@pytest.fixture
def mg_dataset(aiida_profile):
    return DatasetData.from_npz(MG_EXPORT).store()


def test_a_campaign_from_earlier_labels_labels_no_initial_sample(mg_dataset, abinit_code, python_code):
    builder = campaign_builder('mg', abinit_code, python_code, protocol='test', budget=200, dataset=mg_dataset, pool=50,
                               test_dataset=mg_dataset)
    assert builder.dataset.uuid == mg_dataset.uuid
    assert builder.test_dataset.uuid == mg_dataset.uuid
    assert 'initial' not in builder
    assert len(builder.pool.get_array('deformations')) == 50
    assert validate_inputs(builder._inputs(prune=True), None) is None


def test_without_a_dataset_the_campaign_samples_its_initial_configurations(abinit_code, python_code):
    builder = campaign_builder('mg', abinit_code, python_code, protocol='test', initial=5, pool=20)
    assert 'dataset' not in builder
    assert len(builder.initial.get_array('deformations')) == 5


def test_a_dataset_of_the_wrong_kind_is_refused_before_anything_runs(abinit_code, python_code, mg_dataset):
    builder = campaign_builder('bn', abinit_code, python_code, protocol='test', dataset=mg_dataset, pool=10)
    assert 'mg_strain' in validate_inputs(builder._inputs(prune=True), None)


def test_a_bad_dataset_option_is_one_line(aiida_profile):
    with pytest.raises(SystemExit, match='--dataset: no node with pk 999999'):
        load_dataset('999999', '--dataset')
    with pytest.raises(SystemExit, match='--test-dataset: node .* is a Int, not a dataset'):
        load_dataset(str(orm.Int(1).store().pk), '--test-dataset')
    with pytest.raises(SystemExit, match='not a dataset pk or uuid'):
        load_dataset('mg.npz', '--dataset')
