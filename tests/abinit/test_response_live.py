"""Live runs of AbinitResponseCalculation and its restart WorkChain against the real ABINIT (test protocol)."""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

pytestmark = pytest.mark.slow


def _displaced(structure, shift_angstrom):
    """A copy of `structure` with its second atom moved (breaks the cubic symmetry, like a training sample)."""
    from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays

    cell, positions, symbols, _ = structure_to_arrays(structure)
    positions = positions.copy()
    positions[1] += np.asarray(shift_angstrom)
    return structure_from_arrays(cell, positions, symbols)


def test_calcjob_bn_all_responses(abinit_code, bn_structure, pseudo_families):
    """P (Berry phase), ε∞, Z* and Γ force constants of displaced BN in one tiny live run."""
    structure = _displaced(bn_structure, [0.01, -0.005, 0.0])
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        abinit_code, structure, protocol='test', response={'phonons': True}
    )
    inputs = dict(builder.abinit)
    # The calculation itself, without the restart wrapper.
    from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation

    results, node = run_get_node(AbinitResponseCalculation, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    params = results['output_parameters'].get_dict()
    arrays = results['output_arrays']
    assert params['total_energy_units'] == 'Ha' and params['total_energy'] < 0
    assert params['band_gap'] > 1.0 and params['band_gap_units'] == 'eV'  # c-BN is a wide-gap insulator
    assert params['number_of_electrons'] == 8
    eps = arrays.get_array('dielectric_tensor')
    np.testing.assert_allclose(eps, eps.T, atol=1e-4)
    assert 3.0 < np.linalg.eigvalsh(eps).min() < 8.0
    z = arrays.get_array('born_charges')
    assert z.shape == (2, 3, 3)
    np.testing.assert_allclose(z.sum(axis=0), 0.0, atol=1e-12)  # ASR imposed
    assert 1.0 < z[0, 0, 0] < 3.5 and -3.5 < z[1, 0, 0] < -1.0  # B positive, N negative
    fc = arrays.get_array('force_constants_gamma')
    assert fc.shape == (2, 3, 2, 3)
    # Translational invariance of the force constants (acoustic sum rule of C): broken only by the
    # exchange-correlation grid, below 1% at this tiny cutoff.
    assert np.abs(fc.sum(axis=2)).max() < 1e-2 * np.abs(fc).max()
    assert arrays.get_array('polarization').shape == (3,)
    assert arrays.base.attributes.get('polarization_units') == 'e/Bohr^2'
    # The structure went into ABINIT exactly as given.
    text = node.base.repository.get_object_content('aiida.abi')
    assert 'xred' in text and 'chkprim 0' in text and 'ngkpt 2 2 2' in text and 'nshiftk 4' in text


def test_workchain_restarts_unconverged_scf(abinit_code, bn_structure, pseudo_families):
    """nstep too small makes the ground-state SCF fail for real; the handler doubles it and the rerun succeeds."""
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        abinit_code, bn_structure, protocol='test',
        overrides={'parameters': {'nstep': 5, 'tolvrs1': 1.0e-10}},
        response={'polarization': True, 'dielectric': False},
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    calcs = sorted(node.called, key=lambda n: n.ctime)
    assert len(calcs) >= 2
    assert calcs[0].exit_status == AbinitResponseBaseWorkChain._process_class.exit_codes.ERROR_SCF_NOT_CONVERGED.status
    assert calcs[0].outputs.output_parameters['unconverged_datasets'] == [1]
    first, last = calcs[0].inputs.parameters.get_dict(), calcs[-1].inputs.parameters.get_dict()
    assert last['nstep'] > first['nstep'] and last['diemix'] < 1.0
    assert calcs[-1].is_finished_ok
    assert 'polarization' in results['output_arrays'].get_arraynames()


def test_workchain_restarts_after_walltime(abinit_code, bn_structure, pseudo_families):
    """A 1 s limit kills the run for real (SIGXCPU on the direct scheduler); the handler doubles the walltime
    until the run fits."""
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        abinit_code, bn_structure, protocol='test', response={'phonons': True},
        options={'max_wallclock_seconds': 1},
    )
    results, node = run_get_node(builder)
    calcs = sorted(node.called, key=lambda n: n.ctime)
    walltime = AbinitResponseBaseWorkChain._process_class.exit_codes.ERROR_OUT_OF_WALLTIME.status
    assert calcs[0].exit_status == walltime, (calcs[0].exit_status, calcs[0].exit_message)
    limits = [calc.get_option('max_wallclock_seconds') for calc in calcs]
    assert limits == [2**i for i in range(len(calcs))]
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert 'born_charges' in results['output_arrays'].get_arraynames()


@pytest.mark.parametrize('lattice', ['paper', 'relaxed'])
def test_gap_check_at_gamma(abinit_code, pseudo_families, lattice):
    """LDA large-core GaAs (test protocol): at the paper's PBE lattice the bands close at Γ, which the four-shift
    grid never samples; the gap dataset sees it and the run fails. At the LDA lattice the Γ gap is open."""
    from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation
    from aiida_mlresponse.abinit.parsers.response import MIN_BAND_GAP_EV
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics.crystals import gaas

    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        abinit_code, structure_from_arrays(*gaas(lattice)), protocol='test',
        response={'polarization': True, 'dielectric': False})
    results, node = run_get_node(AbinitResponseCalculation, **dict(builder.abinit))
    params = results['output_parameters'].get_dict()
    assert params['band_gap_grid'] > 1.0  # the grid alone always looks like a good insulator
    if lattice == 'paper':
        assert node.exit_status == AbinitResponseCalculation.exit_codes.ERROR_NO_GAP.status
        assert params['direct_gap_gamma'] < MIN_BAND_GAP_EV
    else:
        assert node.is_finished_ok, node.exit_message
        assert params['direct_gap_gamma'] > 0.5 and params['band_gap'] == pytest.approx(params['direct_gap_gamma'])


def test_polarization_extrapolated_from_two_meshes(abinit_code, bn_structure, pseudo_families):
    """With `polarization_mesh_factor` 2 the run keeps the Berry phase of its own mesh and of the twice denser one
    (non-SCF), and P is their extrapolation to a dense mesh (P∞ = P(2N) + (P(2N) - P(N)) / 3)."""
    from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation
    from aiida_mlresponse.physics.polarization import fix_branch
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    structure = _displaced(bn_structure, [0.02, 0.0, 0.0])
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(
        abinit_code, structure, protocol='test', overrides={'kpoints': {'polarization_mesh_factor': 2}})
    results, node = run_get_node(AbinitResponseCalculation, **dict(builder.abinit))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    arrays = results['output_arrays']
    coarse, dense = arrays.get_array('polarization_scf_mesh'), arrays.get_array('polarization_dense_mesh')
    cell = np.array(structure.cell) * ANGSTROM_TO_BOHR
    step = fix_branch(dense, coarse, cell) - coarse
    assert 1e-7 < np.abs(step).max() < 1e-2  # the meshes differ, by much less than a quantum
    np.testing.assert_allclose(arrays.get_array('polarization_as_printed'), dense + step / 3, atol=1e-14)
