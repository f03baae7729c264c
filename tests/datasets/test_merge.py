"""Merging datasets of earlier campaigns into one starting set: rows in order, provenance kept, unlike labels refused."""

import pathlib

import numpy as np
from click.testing import CliRunner

from aiida_mlresponse.cli import cli
from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.workflows.labels import merge_datasets

DATA = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'data'


def stored(name):
    return DatasetData.from_npz(DATA / name).store()


def test_merged_rows_follow_the_inputs_in_order_and_name_their_sources(aiida_profile):
    first, second = stored('mg_fast_56.npz'), stored('mg_fast_172.npz')
    merged = merge_datasets(dataset_0=first, dataset_1=second)
    assert merged.kind == 'mg_strain' and merged.size == 56 + 172
    for column in ('deformation', 'free_energy', 'stress', 'configuration_index'):
        np.testing.assert_array_equal(merged.get_array(column),
                                      np.concatenate([first.get_array(column), second.get_array(column)]))
    assert merged.base.attributes.get('sources') == [{'uuid': first.uuid, 'rows': 56}, {'uuid': second.uuid, 'rows': 172}]
    assert len(merged.base.attributes.get('calculations')) == 56 + 172
    assert merged.base.attributes.get('ngfft') == first.base.attributes.get('ngfft')
    creator = merged.creator
    assert creator.process_label == 'merge_datasets'
    assert {link.node.uuid for link in creator.base.links.get_incoming().all()} == {first.uuid, second.uuid}


def test_the_cli_merges_and_refuses_labels_of_another_protocol(aiida_profile):
    fast, fast2, test = stored('mg_fast_56.npz'), stored('mg_fast_234.npz'), stored('mg_test_182.npz')
    ok = CliRunner().invoke(cli, ['dataset', 'merge', str(fast.pk), fast2.uuid])
    assert ok.exit_code == 0, ok.output
    assert f'290 rows from <{fast.pk}> (56), <{fast2.pk}> (234)' in ok.output
    refused = CliRunner().invoke(cli, ['dataset', 'merge', str(fast.pk), str(test.pk)])
    assert refused.exit_code != 0 and '`ngfft` differs' in refused.output and 'Traceback' not in refused.output
    bn = stored('bn_test_sigma001_harvested.npz')
    refused = CliRunner().invoke(cli, ['dataset', 'merge', str(fast.pk), str(bn.pk)])
    assert refused.exit_code != 0 and 'is `response`' in refused.output
    single = CliRunner().invoke(cli, ['dataset', 'merge', str(fast.pk)])
    assert single.exit_code != 0 and 'at least two' in single.output
