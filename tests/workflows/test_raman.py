"""RamanWorkChain: validation before any run, and a live BN run (test protocol, real ABINIT, real training) whose
ML result is checked against its own DFT reference."""

import io

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.data.model import ModelData
from aiida_mlresponse.ml.registry import trainer
from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_displacement_configurations
from aiida_mlresponse.workflows.raman import RamanWorkChain

_MODELS = {}


def trained_models(abinit_code, bn_structure, tmp_path_factory, count=12, sigma=0.01):
    """P and ε∞ committees (4 members, Taylor heads) trained in this process on `count` BN labels (test protocol),
    made once per test session: displacements of σ = 0.01 Å keep the labels in the linear regime, so the models
    reproduce the DFT derivatives closely."""
    if not _MODELS:
        configurations = sample_displacement_configurations(bn_structure, orm.Float(sigma), orm.Int(count), orm.Int(3))
        results, node = run_get_node(LabelsWorkChain.get_builder_from_protocol(
            abinit_code, configurations, 'response', reference=bn_structure, protocol='test'))
        assert node.is_finished_ok, node.exit_status
        dataset = results['dataset']
        folder = tmp_path_factory.mktemp('raman_models')
        for target in ('polarization', 'dielectric'):
            path = folder / f'{target}.pt'
            trainer('radnet')(dataset.rows(), dataset.extra_attributes(), {'target': target, 'n_members': 4, 'seed': 0},
                              path, log=lambda line: None)
            _MODELS[target] = ModelData.from_checkpoint(path).store().pk
    return {target: orm.load_node(pk) for target, pk in _MODELS.items()}


def raman_builder(abinit_code, structure, models, **inputs):
    builder = RamanWorkChain.get_builder()
    builder.structure = structure
    builder.models = models
    builder.code = abinit_code
    builder.protocol = orm.Str('test')
    for key, value in inputs.items():
        builder[key] = value
    return builder


@pytest.mark.slow
def test_bn_raman_ml_against_its_dft_reference(abinit_code, pseudo_families, bn_structure, tmp_path_factory):
    models = trained_models(abinit_code, bn_structure, tmp_path_factory)
    results, node = run_get_node(raman_builder(abinit_code, bn_structure, models, reference=orm.Str('dft')))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results['lattice']['source'] == 'relaxed' and abs(results['lattice']['a_bohr'] - 6.767) < 1e-9

    # symmetry-reduced finite differences: zincblende needs one displacement, two ABINIT runs (+h, -h)
    labels = results['dft']['labels']
    assert labels.size == 2
    dft, ml = results['dft']['arrays'], results['ml']['arrays']
    dchi = dft.get_array('dchi_dtau')
    np.testing.assert_allclose(dchi.sum(axis=0), 0.0, atol=1e-10)  # acoustic sum rule
    d = dchi[0, 2, 0, 1]  # ∂χ_xy/∂τ_0z: zincblende has only |ε_γαβ| components, equal for every permutation
    assert abs(d) > 1e-4
    levi = np.zeros((3, 3, 3))
    for g, a, b in [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2)]:
        levi[g, a, b] = 1.0
    np.testing.assert_allclose(dchi[0], d * levi, atol=1e-6 * abs(d))

    # phonons: 3 acoustic modes per q̂, one LO above the two TO, LO-TO splitting positive
    for table in (results['ml']['peaks'].get_dict(), results['dft']['peaks'].get_dict()):
        assert table['LO']['frequency_cm1'] > table['TO']['frequency_cm1'] > 0
    assert (dft.get_array('acoustic').sum(axis=1) == 3).all() and (dft.get_array('lo').sum(axis=1) == 1).all()
    for name in ('spectrum_total', 'spectrum_parallel', 'spectrum_perpendicular'):
        assert (dft.get_array(name) >= 0).all() and (ml.get_array(name) >= 0).all()
        assert (ml.get_array(f'{name}_spread') >= 0).all()

    # ML against its own DFT: the committee was trained on the same protocol's labels, in their linear regime
    rows = results['comparison']['rows']
    # Z* against the finite differences of the same Berry-phase P the committee learned (1 %); against DFPT Z* (and
    # so in ω_LO) the test protocol's 2x2x2 grid leaves a gap of its own: measured 4.9 % in Z*, 1.3 % in ω_LO
    tolerances = {'epsilon_inf': 0.01, 'born_charge_atom0_berry_fd': 0.01, 'born_charge_atom0': 0.08,
                  'omega_LO_cm1': 0.03, 'intensity_ratio_LO_TO': 0.10}
    for name, tolerance in tolerances.items():
        assert abs(rows[name]['relative_difference']) < tolerance, (name, rows[name])
    assert rows['omega_TO_cm1']['difference'] == pytest.approx(0.0, abs=1e-9)  # the same DFT force constants
    assert results['comparison']['experiment_cm1'] == {'TO': 1056.0, 'LO': 1306.0}
    png = results['plot'].get_content(mode='rb')
    assert png.startswith(b'\x89PNG')
    print({name: (row['ml'], row['band'], row['dft'], row['relative_difference']) for name, row in rows.items()})


@pytest.mark.slow
def test_models_trained_on_another_cell_are_refused_before_any_run(abinit_code, pseudo_families, bn_structure,
                                                                    tmp_path_factory):
    models = trained_models(abinit_code, bn_structure, tmp_path_factory)
    count_calcjobs = lambda: orm.QueryBuilder().append(orm.CalcJobNode).count()
    before = count_calcjobs()
    with pytest.raises(ValueError, match='was trained on the cell'):
        run_get_node(raman_builder(abinit_code, bn_structure, models, lattice=orm.Str('paper')))
    with pytest.raises(ValueError, match="`models.polarization` predicts `dielectric`"):
        run_get_node(raman_builder(abinit_code, bn_structure, {'polarization': models['dielectric'],
                                                               'dielectric': models['dielectric']}))
    with pytest.raises(ValueError, match='`lattice` must be one of'):
        run_get_node(raman_builder(abinit_code, bn_structure, models, lattice=orm.Str('relax')))
    with pytest.raises(ValueError, match='`reference` must be one of'):
        run_get_node(raman_builder(abinit_code, bn_structure, models, reference=orm.Str('DFT-please')))
    assert count_calcjobs() == before  # refused before any ABINIT run
