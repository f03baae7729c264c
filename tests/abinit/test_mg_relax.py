"""MgRelaxCalculation: bad input refused before submission; a live test-protocol run and its checks."""

import numpy as np
import pytest

from aiida_mlresponse.abinit.calculations.relax import MgRelaxCalculation
from aiida_mlresponse.abinit.inputs import AbinitInputError
from aiida_mlresponse.abinit.mg import fft_friendly, install_seed_family, minimum_ngfft, mg_structure, validate_grid
from aiida_mlresponse.abinit.protocols import MG_PROTOCOLS, ProtocolError, get_protocol_inputs
from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain
from aiida_mlresponse.physics.crystals import MG_ACELL_BOHR
from aiida_mlresponse.physics.strain import deformation_to_cell, symmetric_form_parameters

STRAINED = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]


def load_protocol(name):
    return get_protocol_inputs(MG_PROTOCOLS, name)


def calculation_inputs_from_protocol(code, **kwargs):
    """The inputs of the bare CalcJob that the restart work chain's builder would run."""
    builder = MgRelaxBaseWorkChain.get_builder_from_protocol(code, **kwargs)
    inputs = {key: builder.abinit[key] for key in builder.abinit if key != 'metadata'}
    inputs['metadata'] = {'options': dict(builder.abinit.metadata.options)}
    return inputs


def test_fft_friendly_sizes():
    assert [n for n in range(2, 41) if fft_friendly(n)] == [2, 4, 6, 8, 10, 12, 16, 18, 20, 24, 30, 32, 36, 40]


def test_minimum_grid_matches_abinit_boxcut():
    """ABINIT 9.6 printed boxcut 2.28752 for ngfft 18 30 30 at ecut 8 in this cell (its getcut).

    Our bound uses the continuous face of the box, ABINIT the grid points on it, so ours is
    slightly conservative (never lets through a grid ABINIT finds too small).
    """
    cell = np.array([[6.1845, 0, 0], [-0.3, 9.9, 0], [0.2, 0.3, 9.4]])
    boxcut = 2.0 * np.min(np.array([18, 30, 30]) / minimum_ngfft(cell, 8.0))
    assert boxcut == pytest.approx(2.28752, rel=2e-3) and boxcut <= 2.28752


def test_every_protocol_grid_holds_the_largest_sampled_cell():
    largest = deformation_to_cell([1.1, 1.1, 1.1, 90.0, 90.0, 90.0])
    for name in ('test', 'fast', 'moderate', 'precise'):
        parameters = load_protocol(name)['parameters']
        validate_grid(parameters['ngfft'], parameters['ecut'], largest)


@pytest.mark.parametrize(
    'ngfft, message',
    [([18, 30, 42], 'not FFT-friendly'), ([18, 30, 27], 'not FFT-friendly'), ([12, 30, 30], 'too small'),
     ([18, 30], 'three integers')],
)
def test_bad_grids_refused(ngfft, message):
    with pytest.raises(AbinitInputError, match=message):
        validate_grid(ngfft, 8.0, np.diag(MG_ACELL_BOHR))


@pytest.mark.parametrize(
    'deformation, message',
    [([0.0, 1, 1, 90, 90, 90], 'positive'), ([1, 1, -1, 90, 90, 90], 'positive'),
     ([1, 1, 1, 90, 180, 90], 'between 0° and 180°'), ([1, 1, 1, 170, 10, 10], 'Gram determinant')],
)
def test_bad_deformations_refused(aiida_profile, deformation, message):
    with pytest.raises(AbinitInputError, match=message):
        mg_structure(deformation)


def test_structure_that_is_not_the_mg_reference_refused(aiida_profile, abinit_code, pseudo_families, bn_structure):
    with pytest.raises(AbinitInputError, match='4-atom Mg reference'):
        calculation_inputs_from_protocol(abinit_code, structure=bn_structure, protocol='test')
    moved = mg_structure(STRAINED)
    positions = np.array([site.position for site in moved.sites])
    positions[3] += [0.05, 0.0, 0.0]
    broken = moved.clone()
    broken.reset_sites_positions(positions.tolist())
    with pytest.raises(AbinitInputError, match='symmetric form'):
        calculation_inputs_from_protocol(abinit_code, structure=broken, protocol='test')
    with pytest.raises(ProtocolError, match='unknown protocol `ultra`'):
        calculation_inputs_from_protocol(abinit_code, deformation=STRAINED, protocol='ultra')


def test_calcjob_validator_refuses_bad_grid_before_submission(aiida_profile, abinit_code, pseudo_families):
    from aiida import orm
    from aiida.engine import run

    inputs = calculation_inputs_from_protocol(abinit_code, deformation=STRAINED, protocol='test')
    for ngfft, message in (([18, 30, 28], 'not FFT-friendly'), ([16, 24, 24], 'too small')):
        parameters = inputs['parameters'].get_dict()
        parameters['ngfft'] = ngfft
        with pytest.raises(ValueError, match=message):
            run(MgRelaxCalculation, **{**inputs, 'parameters': orm.Dict(parameters)})
    parameters = inputs['parameters'].get_dict()
    parameters['ionmov'] = 22
    with pytest.raises(ValueError, match='set by the CalcJob'):
        run(MgRelaxCalculation, **{**inputs, 'parameters': orm.Dict(parameters)})


def test_seed_pseudo_installed_as_generic_family(aiida_profile):
    from aiida_pseudo.data.pseudo import Psp8Data, PseudoPotentialData

    family, created = install_seed_family()
    again, created_again = install_seed_family()
    assert created and not created_again and again.pk == family.pk
    pseudo = family.get_pseudo('Mg')
    assert type(pseudo) is PseudoPotentialData and not isinstance(pseudo, Psp8Data)
    first_lines = pseudo.get_content().splitlines()[:3]
    assert first_lines[2].split()[0] == '5'  # pspcod 5, the authors' format
    assert load_protocol('precise')['pseudo_family'] == family.label


@pytest.mark.slow
def test_live_relaxation_outputs_and_integral_checks(aiida_profile, abinit_code, pseudo_families):
    from aiida.engine import run_get_node

    inputs = calculation_inputs_from_protocol(abinit_code, deformation=STRAINED, protocol='test')
    results, node = run_get_node(MgRelaxCalculation, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    out = results['output_parameters'].get_dict()
    checks = out['checks']
    ngfft = inputs['parameters']['ngfft']

    assert checks['electrons_integral'] == pytest.approx(8.0, abs=1e-6)
    assert abs(checks['band_energy_integral'] - out['band_energy']) < 1e-6
    assert abs(checks['entropy_energy_integral'] - out['entropy_energy']) < 1e-6
    assert out['entropy_energy'] != 0.0  # a metal with cold smearing: the check is not 0 = 0
    assert checks['density_from_wavefunctions_max_difference'] < 1e-6
    assert out['symmetric_form_deviation'] < 1e-6
    assert out['max_force'] < inputs['parameters']['tolmxf']
    assert out['relaxation_steps'] > 1  # the strained cell really relaxed

    arrays = results['output_arrays']
    r_params, deviation = symmetric_form_parameters(arrays.get_array('xred'))
    np.testing.assert_allclose(arrays.get_array('R'), r_params)
    assert np.abs(r_params).max() > 1e-4
    np.testing.assert_allclose(arrays.get_array('deformation'), STRAINED, atol=1e-8)
    stress = arrays.get_array('stress')
    np.testing.assert_allclose(stress, stress.T)

    fields = results['fields']
    assert sorted(fields.get_arraynames()) == ['phi', 'rho', 's', 'u']
    assert fields.base.attributes.get('units')['rho'] == 'e/Bohr^3'
    for name in ('rho', 'phi', 'u', 's'):
        array = fields.get_array(name)
        assert array.dtype == np.float32 and list(array.shape) == ngfft
        assert name not in fields.base.attributes.all or not isinstance(fields.base.attributes.get(name), list)
    rho = fields.get_array('rho').astype(float)
    volume = out['volume']
    assert rho.sum() * volume / rho.size == pytest.approx(8.0, abs=1e-4)  # float32 storage
    assert out['free_energy'] < 0


@pytest.mark.slow
def test_live_relaxation_with_the_seed_pspcod5_pseudo(aiida_profile, abinit_code, pseudo_families):
    """The authors' Mg.pseu (generic PseudoPotentialData) runs through the same CalcJob (test-size settings)."""
    from aiida.engine import run_get_node

    from aiida_mlresponse.abinit.mg import SEED_FAMILY_LABEL

    install_seed_family()
    inputs = calculation_inputs_from_protocol(
        abinit_code, deformation=STRAINED, protocol='test', overrides={'pseudo_family': SEED_FAMILY_LABEL}
    )
    assert inputs['pseudos']['Mg'].filename == 'Mg.pseu'
    results, node = run_get_node(MgRelaxCalculation, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    out = results['output_parameters'].get_dict()
    assert out['checks']['electrons_integral'] == pytest.approx(8.0, abs=1e-6)
    assert abs(out['checks']['band_energy_integral'] - out['band_energy']) < 1e-6
    assert 'pseudos "Mg.pseu"' in node.base.repository.get_object_content('aiida.abi')
