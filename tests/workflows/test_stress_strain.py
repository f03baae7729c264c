"""StressStrainWorkChain on a tiny PCA-MLP committee fitted in the test to the synthetic Mg surface
(`ml.pcamlp.synthetic`, whose exact F is known), and its DFT reference with real ABINIT at `test`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.data.model import ModelData
from aiida_mlresponse.ml.pcamlp import model as pcamlp_model
from aiida_mlresponse.ml.pcamlp.fit import FitSettings, fit_pcamlp
from aiida_mlresponse.ml.pcamlp.synthetic import synthetic_dataset, synthetic_free_energy
from aiida_mlresponse.physics import stress as st
from aiida_mlresponse.physics.units import HA_PER_BOHR3_TO_GPA
from aiida_mlresponse.workflows.stress_strain import StressStrainWorkChain

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    data = synthetic_dataset(100, grid=(4, 6, 6), seed=3)
    model, _ = fit_pcamlp(data['D'], {'F': data['F'], 'R': data['R']}, {'rho': data['rho']},
                          {'n_members': 3, 'pca_components': 4, 'field_hidden': [16, 16], 'scalar_hidden': [16, 16]},
                          stress=data['stress'],
                          settings=FitSettings(epochs=5, lbfgs_iterations=20, field_epochs=2, field_lbfgs_iterations=2))
    path = tmp_path_factory.mktemp('model') / 'mg.pt'
    pcamlp_model.save(path, model)
    return path


@pytest.fixture
def model_node(aiida_profile, model_file):
    return ModelData.from_checkpoint(model_file).store()


def test_curve_band_and_instability_of_a_tiny_committee(model_node):
    builder = StressStrainWorkChain.get_builder_from_model(model_node, axis='x2', strain_range=(-0.04, 0.01), step=0.01)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    curve = results['curve']
    applied = curve.get_array('applied')
    np.testing.assert_allclose(applied, [-0.04, -0.03, -0.02, -0.01, 0.0, 0.01], atol=1e-12)
    sigma = curve.get_array('sigma_axis')
    zero = int(np.argmin(np.abs(applied)))
    assert abs(sigma[zero]) < 0.01  # GPa: strain is measured from the model's own zero-stress cell
    assert np.all(np.diff(sigma) > 0)  # compression gives compressive stress, monotonic in this small range
    assert np.max(curve.get_array('residual_stress')) < 1e-3  # GPa: transverse and shear stresses relaxed away
    for name in ('sigma_axis_band', 'transverse_band', 'stiffness_band', 'R_band'):
        band = curve.get_array(name)
        assert np.all(band >= 0) and np.all(np.isfinite(band)), name
    assert curve.get_array('sigma_axis_members').shape == (3, len(applied))
    assert curve.get_array('rho_relative_spread').shape == applied.shape
    # the committee's curve follows the exact surface it was fitted to, within a few times its band
    exact = st.uniaxial_path_from(synthetic_free_energy, 1, applied[applied <= 0][::-1],
                                  st.equilibrium_strain(synthetic_free_energy))
    error = np.abs(sigma[applied <= 0] - exact.sigma[::-1] * HA_PER_BOHR3_TO_GPA)
    assert np.all(error < 0.1 * np.abs(exact.sigma[::-1] * HA_PER_BOHR3_TO_GPA).max() + 0.05), error
    # provenance: the curve is the output of a calcfunction whose input is the model node
    assert curve.creator.process_label == 'uniaxial_curve' and curve.creator.inputs.model.uuid == model_node.uuid
    instability = results['instability'].get_dict()
    assert set(instability) == {'compression'}  # the tension branch has one point, too few to look at
    assert {'found', 'strain', 'signs', 'members_found', 'strain_band'} <= set(instability['compression'])
    png = results['plot'].get_content(mode='rb')
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and results['plot'].creator.process_label == 'plot_curve'


@pytest.mark.parametrize('inputs, message', [
    ({'axis': 'x4'}, 'must be one of x1, x2, x3'),
    ({'strain_range': [0.01, 0.02]}, 'low <= 0 <= high'),
    ({'strain_range': [-0.3, 0.0]}, 'within'),
    ({'step': 0.0}, '`step` must be positive'),
    ({'reference': [-0.01]}, '`reference` needs code'),
])
def test_bad_inputs_are_refused_with_a_clear_message(model_node, inputs, message):
    builder = StressStrainWorkChain.get_builder_from_model(model_node)
    nodes = {'axis': orm.Str, 'strain_range': orm.List, 'step': orm.Float}
    with pytest.raises(ValueError, match=message):  # a port validator refuses at assignment, the others at launch
        for key, value in inputs.items():
            if key == 'reference':
                builder.reference = {'strains': orm.List(value)}
            else:
                builder[key] = nodes[key](value)
        run_get_node(builder)


def test_a_radnet_model_is_refused(aiida_profile, model_file, tmp_path):
    node = ModelData.from_checkpoint(model_file)
    node.base.attributes.set('kind', 'radnet')
    builder = StressStrainWorkChain.get_builder_from_model(node.store())
    with pytest.raises(ValueError, match='must be a PCA-MLP'):
        run_get_node(builder)


@pytest.mark.slow
def test_dft_reference_at_two_strains(model_node, abinit_code, pseudo_families):
    builder = StressStrainWorkChain.get_builder_from_model(
        model_node, axis='x1', strain_range=(-0.02, 0.0), step=0.01, reference_code=abinit_code,
        reference_strains=[0.0, -0.02], protocol='test', max_concurrent=2)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    dataset, diff = results['reference']['dataset'], results['reference']['difference']
    assert dataset.kind == 'mg_strain' and dataset.size == 2
    assert dataset.creator.process_label == 'collect_dataset'  # the labelling's dataset node, with its provenance
    assert diff.creator.process_label == 'compare_reference' and diff.creator.inputs.dataset.uuid == dataset.uuid
    rows = dataset.rows()
    order = np.argsort(rows['configuration_index'])
    np.testing.assert_allclose(diff.get_array('applied'), [0.0, -0.02])
    np.testing.assert_allclose(diff.get_array('dft_sigma_axis'), rows['stress'][order, 0, 0] * HA_PER_BOHR3_TO_GPA)
    np.testing.assert_allclose(diff.get_array('difference_sigma_axis'),
                               diff.get_array('ml_sigma_axis') - diff.get_array('dft_sigma_axis'))
    np.testing.assert_allclose(diff.get_array('difference_stress'), diff.get_array('ml_stress') - diff.get_array('dft_stress'))
    # ABINIT relaxed exactly the model's cells at those strains
    curve = results['curve']
    rows_in_curve = [int(np.argmin(np.abs(curve.get_array('applied') - s))) for s in (0.0, -0.02)]
    np.testing.assert_allclose(rows['deformation'][order], curve.get_array('deformation')[rows_in_curve], atol=1e-8)
    assert np.all(diff.get_array('ml_sigma_axis_band') >= 0)
    with torch.no_grad():  # the model's stress of those cells, recomputed here
        net = model_node.load()[0].double()
        again = st.cauchy_stress(net.free_energy, rows['deformation'][order])[:, 0, 0] * HA_PER_BOHR3_TO_GPA
    np.testing.assert_allclose(diff.get_array('ml_sigma_axis'), again, rtol=1e-6, atol=1e-9)
    assert results['plot'].get_content(mode='rb')[:4] == b'\x89PNG'


@pytest.mark.slow
def test_dft_only_path_runs_its_quasi_newton_steps_on_record(abinit_code, pseudo_families):
    """The machinery at `test` (the physics needs `fast`: at ecut 8 Ha the stress of the `test` set-up is too rough
    for a few quasi-Newton steps to zero; benchmarks/stress_strain.py has the `fast` paths)."""
    from aiida_mlresponse.workflows.stress_strain_dft import UniaxialDFTPathWorkChain

    builder = UniaxialDFTPathWorkChain.get_builder()
    builder.code = abinit_code
    builder.axis = orm.Str('x1')
    builder.strains = orm.List([-0.02])
    builder.protocol = orm.Str('test')
    builder.max_steps = orm.Int(2)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    path = results['path']
    np.testing.assert_allclose(path.get_array('applied'), [-0.02])
    # the axis strain is the applied one relative to the equilibrium run's cell, whatever the transverse steps did
    np.testing.assert_allclose(path.get_array('strain')[:, 0], [-0.02], atol=1e-10)
    assert 1 <= path.get_array('steps')[0] <= 2
    stress = path.get_array('stress')[0]
    np.testing.assert_allclose(path.get_array('sigma_axis'), [stress[0, 0]])
    np.testing.assert_allclose(path.get_array('residual'), [max(abs(stress[1, 1]), abs(stress[2, 2]))])
    assert path.get_array('converged')[0] == (path.get_array('residual')[0] < 0.05)
    # provenance: the path is made from the output arrays of the relaxations that ended the equilibrium and the point
    creator = path.creator
    assert creator.process_label == 'collect_dft_path'
    sources = {link.node.creator.uuid for link in creator.base.links.get_incoming()
               if link.link_label.startswith('point_') or link.link_label == 'equilibrium'}
    relaxations = {c.uuid for w in node.called if w.process_label == 'MgRelaxBaseWorkChain' for c in w.called}
    assert len(sources) == 2 and sources <= relaxations
    assert len([w for w in node.called if w.process_label == 'MgRelaxBaseWorkChain']) <= 4  # max_steps per point
