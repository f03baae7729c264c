"""LabelsWorkChain, the one labelling interface, with real ABINIT (test protocol), and its provenance queries."""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.labels import (
    LabelsWorkChain,
    sample_deformation_configurations,
    sample_displacement_configurations,
)
from aiida_mlresponse.workflows.provenance import calculations_behind, datasets_fed_by

STRAINED = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]
REFERENCE = [1.0, 1.0, 1.0, 90.0, 90.0, 90.0]


def array_data(**arrays):
    node = orm.ArrayData()
    for name, value in arrays.items():
        node.set_array(name, np.asarray(value))
    return node


@pytest.mark.slow
def test_label_bn_displacements_then_extend_the_dataset(abinit_code, pseudo_families, bn_structure):
    configurations = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(1), orm.Int(7))
    builder = LabelsWorkChain.get_builder_from_protocol(abinit_code, configurations, 'response', reference=bn_structure, protocol='test')
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    first = results['dataset']
    assert first.kind == 'response' and first.size == 1 and first.units['polarization'] == 'e/bohr^2'
    assert results['failed'].get_dict() == {}

    # Extend it with a second configuration (index 1 of a larger pool), reusing the reference labels.
    more = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(2), orm.Int(8))
    pick = array_data(positions=more.get_array('positions')[1:], configuration_index=[1])
    builder = LabelsWorkChain.get_builder_from_protocol(abinit_code, pick, 'response', reference=bn_structure,
                                                        protocol='test', dataset=first)
    builder.reference_arrays = results['reference_arrays']
    results2, node2 = run_get_node(builder)
    assert node2.is_finished_ok, node2.exit_message
    labellers = [n for n in node2.called if n.process_label == 'AbinitResponseBaseWorkChain']
    assert len(labellers) == 1 and labellers[0].inputs.abinit.structure.pk != bn_structure.pk  # no second reference run
    dataset = results2['dataset']
    assert dataset.size == 2
    np.testing.assert_array_equal(dataset.get_array('configuration_index'), [0, 1])
    positions = dataset.get_array('positions')
    np.testing.assert_allclose(positions[0], configurations.get_array('positions')[0])
    np.testing.assert_allclose(positions[1], more.get_array('positions')[1])
    reference = np.array([site.position for site in bn_structure.sites])
    assert 0 < np.abs(positions - reference).max() < 0.06  # σ = 0.01 Å
    eps = dataset.get_array('dielectric_tensor')
    assert eps.shape == (2, 3, 3) and np.all(np.diagonal(eps, axis1=1, axis2=2) > 1)
    # the branch is fixed against the reference: displaced P is close to the reference P
    p_ref = results['reference_arrays'].get_array('polarization')
    assert np.abs(dataset.get_array('polarization') - p_ref).max() < 1e-2  # a branch jump is ~0.06 e/bohr^2 here

    # provenance both ways: the two ABINIT calculations are behind the extended dataset
    calcs = calculations_behind(dataset)
    assert {c.uuid for c in calcs} == set(dataset.base.attributes.get('calculations'))
    assert len(calcs) == 2 and all(calc.process_type.endswith('mlresponse.abinit.response') for calc in calcs)
    newest = [c for c in calcs if c.uuid == dataset.base.attributes.get('calculations')[1]][0]
    assert [d.pk for d in datasets_fed_by(newest)] == [dataset.pk]


@pytest.mark.slow
def test_mg_labels_keep_the_good_and_record_the_failed(abinit_code, pseudo_families):
    configurations = array_data(deformations=[REFERENCE, STRAINED])
    # One BFGS step, no restart, tolmxf 6e-4 Ha/Bohr: the reference cell starts with a max force of
    # 4.8e-4 (not zero: the orthorhombic k-mesh does not keep the hexagonal symmetry that pins y),
    # the strained one with 8.0e-4, so only the strained one fails; it must be recorded and left out.
    builder = LabelsWorkChain.get_builder_from_protocol(
        abinit_code, configurations, 'mg_strain', protocol='test',
        overrides={'parameters': {'ntime': 1, 'tolmxf': 6.0e-4}, 'max_iterations': 1})
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    failed = results['failed'].get_dict()
    assert list(failed) == ['1'] and failed['1']['exit_status'] != 0 and failed['1']['message']
    np.testing.assert_allclose(failed['1']['deformations'], STRAINED)
    assert results['failed'].creator.process_label == 'left_out_configurations'
    dataset = results['dataset']
    assert dataset.kind == 'mg_strain' and dataset.size == 1
    np.testing.assert_array_equal(dataset.get_array('configuration_index'), [0])
    np.testing.assert_allclose(dataset.get_array('deformation'), [REFERENCE], atol=1e-8)
    np.testing.assert_allclose(dataset.get_array('R'), [[0, 0, 0]], atol=1e-6)  # symmetric reference: R = 0
    assert dataset.get_array('rho').dtype == np.float32 and dataset.get_array('rho').shape == (1, 18, 30, 30)
    assert dataset.get_array('stress').shape == (1, 3, 3)
    assert dataset.base.attributes.get('ngfft') == [18, 30, 30]
    good = [n for n in node.called if n.is_finished_ok and n.process_label == 'MgRelaxBaseWorkChain']
    assert {c.uuid for c in calculations_behind(dataset)} == {c.uuid for g in good for c in g.called if isinstance(c, orm.CalcJobNode)}
    # harvesting the work chain (as for one stopped early) gives the same rows, with the same provenance
    from aiida_mlresponse.workflows.labels import harvest_labels

    harvested = harvest_labels(node)
    assert harvested.uuid != dataset.uuid and harvested.creator.process_label == 'collect_dataset'
    for column in ('configuration_index', 'deformation', 'free_energy', 'stress', 'rho'):
        np.testing.assert_array_equal(harvested.get_array(column), dataset.get_array(column))
    assert {c.uuid for c in calculations_behind(harvested)} == {c.uuid for c in calculations_behind(dataset)}


def test_sampler_calcfunctions_are_seeded_and_on_record(aiida_profile, bn_structure):
    a = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(3), orm.Int(5))
    b = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(3), orm.Int(5))
    np.testing.assert_array_equal(a.get_array('positions'), b.get_array('positions'))
    assert a.get_array('positions').shape == (3, len(bn_structure.sites), 3)
    d = sample_deformation_configurations(orm.Int(4), orm.Int(2024), orm.Float(0.05), orm.Float(3.0))
    assert d.get_array('deformations').shape == (4, 6) and d.creator.process_label == 'sample_deformation_configurations'


@pytest.mark.parametrize('kind, arrays, message', [
    ('response', {'positions': np.zeros((2, 5, 3))}, r'shape \(N, 2, 3\)'),
    ('response', {'deformations': np.ones((2, 6))}, 'must hold positions'),
    ('mg_strain', {'deformations': [[1, 1, 0, 90, 90, 90]]}, 'positive'),
    ('mg_strain', {'deformations': [[1, 1, 1, 170, 10, 10]]}, 'Gram'),
    ('mg_strain', {'deformations': [[1, 1, 1]]}, r'\(N, 6\)'),
    ('mg_strain', {'deformations': [REFERENCE], 'R': [[0, 0]]}, r'`R` must have shape \(1, 3\)'),
    ('phonons', {'deformations': [REFERENCE]}, 'unknown dataset kind'),
])
def test_bad_configurations_refused_before_anything_runs(abinit_code, pseudo_families, bn_structure, kind, arrays, message):
    calcs_before = orm.QueryBuilder().append(orm.CalcJobNode).count()
    builder = LabelsWorkChain.get_builder_from_protocol(abinit_code, array_data(**arrays), kind, reference=bn_structure, protocol='test')
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)
    assert orm.QueryBuilder().append(orm.CalcJobNode).count() == calcs_before


def test_a_response_dataset_cannot_be_extended_with_mg_rows(abinit_code, pseudo_families, bn_structure):
    from aiida_mlresponse.data.dataset import DatasetData

    dataset = DatasetData()
    dataset.set_rows('response', {'positions': np.zeros((1, 2, 3)), 'cells': np.eye(3)[None], 'polarization': np.zeros((1, 3)),
                                  'dielectric_tensor': np.eye(3)[None], 'configuration_index': [0]})
    builder = LabelsWorkChain.get_builder_from_protocol(abinit_code, array_data(deformations=[REFERENCE]), 'mg_strain',
                                                        protocol='test', dataset=dataset.store())
    with pytest.raises(ValueError, match='cannot extend a `response` dataset'):
        run_get_node(builder)


def test_a_configuration_no_run_could_take_stops_the_set_up_with_its_index(abinit_code, pseudo_families):
    """A deformation too stretched for the `test` protocol's fixed FFT grid (the PCA-MLP's fields need one grid):
    exit status 488 names its index and the reason, and no ABINIT run started."""
    calcs_before = orm.QueryBuilder().append(orm.CalcJobNode).count()
    configurations = array_data(deformations=[REFERENCE, [1.0, 1.25, 1.0, 90.0, 90.0, 90.0]])
    builder = LabelsWorkChain.get_builder_from_protocol(abinit_code, configurations, 'mg_strain', protocol='test')
    _, node = run_get_node(builder)
    assert node.exit_status == LabelsWorkChain.exit_codes.ERROR_INVALID_CONFIGURATION.status == 488
    assert 'index 1' in node.exit_message and 'ngfft' in node.exit_message
    assert orm.QueryBuilder().append(orm.CalcJobNode).count() == calcs_before
