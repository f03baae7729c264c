"""MgLabelsWorkChain and MgRelaxBaseWorkChain with live ABINIT at the test protocol."""

import numpy as np
import pytest

STRAINED = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]
REFERENCE = [1.0, 1.0, 1.0, 90.0, 90.0, 90.0]


def test_labels_workchain_refuses_bad_deformations(aiida_profile, abinit_code):
    from aiida import orm
    from aiida.engine import run

    from aiida_mlresponse.workflows.mg_labels import MgLabelsWorkChain

    for bad, message in (([[1, 1, 0, 90, 90, 90]], 'positive'), ([[1, 1, 1, 170, 10, 10]], 'Gram'), ([[1, 1, 1]], r'\(N, 6\)')):
        deformations = orm.ArrayData()
        deformations.set_array('deformations', np.array(bad, dtype=float))
        with pytest.raises(ValueError, match=message):
            run(MgLabelsWorkChain, code=abinit_code, deformations=deformations, protocol=orm.Str('test'))


@pytest.mark.slow
def test_restart_continues_an_unfinished_relaxation(aiida_profile, abinit_code, pseudo_families):
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.mg_labels import MgRelaxBaseWorkChain

    builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
        abinit_code, deformation=STRAINED, protocol='test', overrides={'parameters': {'ntime': 3}, 'max_iterations': 3}
    )
    results, node = run_get_node(builder)
    calculations = sorted(node.called, key=lambda n: n.ctime)
    assert node.is_finished_ok, node.exit_status
    assert calculations[0].exit_status == 420  # relaxation not converged in 3 BFGS steps
    assert len(calculations) >= 2
    second = calculations[1]
    # the restart starts where the first stopped, with more steps
    assert second.inputs.structure.pk == calculations[0].outputs.output_structure.pk
    assert second.inputs.parameters['ntime'] == 6
    assert results['output_parameters']['symmetric_form_deviation'] < 1e-6


@pytest.mark.slow
def test_labels_workchain_keeps_the_good_and_reports_the_failed(aiida_profile, abinit_code, pseudo_families):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.mg_labels import MgLabelsWorkChain

    deformations = orm.ArrayData()
    deformations.set_array('deformations', np.array([REFERENCE, STRAINED]))
    # One BFGS step, no restart, tolmxf 6e-4 Ha/Bohr: the reference cell starts with a max force of
    # 4.8e-4 (not zero: the orthorhombic k-mesh does not keep the hexagonal symmetry that pins y),
    # the strained one with 8.0e-4, so only the strained one fails; it must be reported and left out.
    results, node = run_get_node(
        MgLabelsWorkChain, code=abinit_code, deformations=deformations, protocol=orm.Str('test'),
        overrides=orm.Dict({'parameters': {'ntime': 1, 'tolmxf': 6.0e-4}, 'max_iterations': 1}),
    )
    assert node.is_finished_ok, node.exit_status
    failed = results['failed'].get_dict()
    assert list(failed) == ['1']
    np.testing.assert_allclose(failed['1']['deformation'], deformations.get_array('deformations')[1])
    assert results['failed'].creator.process_label == 'left_out_configurations'  # provenance: created by a calcfunction
    dataset = results['dataset']
    assert dataset.kind == 'mg_strain' and dataset.size == 1
    np.testing.assert_array_equal(dataset.get_array('configuration_index'), [0])
    np.testing.assert_allclose(dataset.get_array('deformation'), [REFERENCE], atol=1e-8)
    np.testing.assert_allclose(dataset.get_array('R'), [[0, 0, 0]], atol=1e-6)  # symmetric reference: R = 0
    assert dataset.get_array('rho').dtype == np.float32 and dataset.get_array('rho').shape == (1, 18, 30, 30)
    assert dataset.get_array('stress').shape == (1, 3, 3)
    for name in ('free_energy', 'band_energy', 'entropy_energy', 'rho', 'phi', 'u', 's'):
        assert name in dataset.units
    # provenance: the dataset's creator took the outputs of the reference calculation as inputs
    creator = dataset.creator
    calculations = [n for n in creator.base.links.get_incoming().all_nodes() if isinstance(n, orm.Data)]
    sources = {n.creator.pk for n in calculations if n.creator is not None}
    relax = [n for n in node.called if n.process_label == 'MgRelaxBaseWorkChain']
    good = [n for n in relax if n.is_finished_ok][0]
    assert {c.pk for c in good.called} & sources
