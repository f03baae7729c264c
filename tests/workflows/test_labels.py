"""The displacement labelling WorkChain with real ABINIT (test protocol) and its provenance queries."""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.labels import DisplacementLabelsWorkChain
from aiida_mlresponse.workflows.provenance import calculations_behind, datasets_fed_by


@pytest.mark.slow
def test_label_bn_displacements_live(abinit_code, pseudo_families, bn_structure):
    builder = DisplacementLabelsWorkChain.get_builder_from_protocol(
        abinit_code, bn_structure, protocol='test', sigma=0.01, count=2, seed=7
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message

    dataset = results['dataset']
    assert dataset.kind == 'response' and dataset.size == 2
    assert dataset.units['polarization'] == 'e/bohr^2'
    positions = dataset.get_array('positions')
    reference = np.array([site.position for site in bn_structure.sites])
    displacement = positions - reference
    assert 0 < np.abs(displacement).max() < 0.06  # σ = 0.01 Å
    eps = dataset.get_array('dielectric_tensor')
    assert eps.shape == (2, 3, 3) and np.all(np.diagonal(eps, axis1=1, axis2=2) > 1)
    # the branch is fixed against the reference: displaced P is close to the reference P
    p_ref = results['reference_arrays'].get_array('polarization')
    assert np.abs(dataset.get_array('polarization') - p_ref).max() < 1e-3

    # provenance both ways: two ABINIT calculations behind the dataset, each feeding only it
    calcs = calculations_behind(dataset)
    assert len(calcs) == 2 and all(calc.process_type.endswith('mlresponse.abinit.response') for calc in calcs)
    assert {c.uuid for c in calcs} == set(dataset.base.attributes.get('calculations'))
    assert [d.pk for d in datasets_fed_by(calcs[0])] == [dataset.pk]


@pytest.mark.parametrize('sigma, count, message', [(0.0, 2, 'must be positive'), (-0.01, 2, 'must be positive'), (0.01, 0, 'at least 1')])
def test_bad_sampling_inputs_refused_before_anything_runs(abinit_code, pseudo_families, bn_structure, sigma, count, message):
    calcs_before = orm.QueryBuilder().append(orm.CalcJobNode).count()
    with pytest.raises(ValueError, match=message):
        builder = DisplacementLabelsWorkChain.get_builder_from_protocol(
            abinit_code, bn_structure, protocol='test', sigma=sigma, count=count
        )
        run_get_node(builder)
    assert orm.QueryBuilder().append(orm.CalcJobNode).count() == calcs_before
