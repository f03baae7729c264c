"""`aiida-mlresponse predict` on a model file: ASE-readable structures and the radnet HDF5 layout."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from aiida_mlresponse.cli import cli
from aiida_mlresponse.ml import checkpoint
from aiida_mlresponse.ml.radnet.fit import fit_committee
from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5
from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

from ..conftest import RADNET_DATA


@pytest.fixture(scope='module')
def gaas_model(tmp_path_factory):
    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5')
    committee, _ = fit_committee(data.positions[:30], data.cell, data.numbers, data.polarization[:30], 'polarization',
                                 hyperparameters={'n_members': 2, 'training': {'epochs': 2, 'log_every': 0}}, log=None)
    path = tmp_path_factory.mktemp('model') / 'p.pt'
    checkpoint.save(path, committee, metadata={'target': 'polarization', 'cell_bohr': data.cell.tolist(),
                                               'atomic_numbers': data.numbers.tolist()})
    return path, data


@pytest.mark.slow
def test_predict_ase_file_with_born_charges(gaas_model, tmp_path):
    import ase
    import ase.io

    path, data = gaas_model
    frames = [ase.Atoms(numbers=data.numbers, positions=p * BOHR_TO_ANGSTROM, cell=data.cell * BOHR_TO_ANGSTROM, pbc=True)
              for p in data.positions[100:103]]
    structures = tmp_path / 'frames.extxyz'
    ase.io.write(structures, frames)
    output = tmp_path / 'out.json'
    result = CliRunner().invoke(cli, ['predict', str(path), str(structures), '-o', str(output), '--born-charges'])
    assert result.exit_code == 0, result.output
    out = json.loads(output.read_text())
    assert np.shape(out['polarization']) == (3, 3) and np.shape(out['polarization_spread']) == (3, 3)
    zstar = np.array(out['born_charges'])
    assert zstar.shape == (3, 2, 3, 3)
    np.testing.assert_allclose(zstar.sum(axis=1), 0.0, atol=1e-10)  # acoustic sum rule
    assert out['units']['born_charges'] == 'e'
    # The same as the autograd reference path, to the float32 precision of the networks.
    from aiida_mlresponse.ml.radnet.predict import reference_response

    committee, payload = checkpoint.load(path)
    reference = reference_response(committee, payload['metadata'], data.positions[100:103], data.cell, data.numbers,
                                   with_born_charges=True)
    for key in ('polarization', 'born_charges'):
        scale = np.abs(reference[key]).max()
        np.testing.assert_allclose(np.array(out[key]), reference[key], rtol=0, atol=1e-6 * scale, err_msg=key)


@pytest.mark.slow
def test_predict_radnet_h5_and_wrong_cell_refused(gaas_model, tmp_path):
    path, data = gaas_model
    output = tmp_path / 'out.npz'
    result = CliRunner().invoke(cli, ['predict', str(path), str(RADNET_DATA / 'GaAs.h5'), '-o', str(output)])
    assert result.exit_code == 0, result.output
    with np.load(output) as arrays:
        predicted = arrays['polarization']
    assert predicted.shape == (800, 3)
    # trained 2 epochs on 30 configurations: far from exact, but on the scale of the labels
    assert np.abs(predicted - data.polarization).max() < 10 * np.ptp(data.polarization, axis=0).max()
    result = CliRunner().invoke(cli, ['predict', str(path), str(RADNET_DATA / 'BN_cubic.h5'), '-o', str(output)])
    assert result.exit_code != 0 and 'does not have the cell and atom list' in result.output


def _committee(n_outputs, seed, central=False):
    """An untrained committee with a Taylor head on GaAs (float64 members, so derivatives compare tightly);
    with `central`, central heads of their own (another fit), so the mean is not the members' mean."""
    import torch

    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.ml.radnet.committee import Committee
    from aiida_mlresponse.physics.crystals import gaas
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    cell, positions, _ = gaas()
    cell, positions = cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR
    rng = np.random.default_rng(seed)
    samples = positions + 0.02 * rng.standard_normal((30, 2, 3))
    torch.manual_seed(seed)
    committee = Committee({'n_members': 3, 'member': {'preset': 'tiny', 'n_outputs': n_outputs, 'dtype': 'float64',
                                                       'taylor': {'degree': 3, 'n_atoms': 2}}, 'central': central})
    for member in committee.members:
        member.taylor.set_from(TaylorBaseline(3, 1e-10).fit(samples, rng.standard_normal((30, n_outputs)), cell))
        member.set_input_standardization(torch.rand(10, 2, 1, 9, 9, 9, dtype=torch.float64) * 3)
        with torch.no_grad():
            member.output_offset.copy_(torch.as_tensor(rng.standard_normal(n_outputs)))
    if central:
        committee.central.taylor.set_from(TaylorBaseline(3, 1e-10).fit(samples, rng.standard_normal((30, n_outputs)),
                                                                       cell))
        committee.central.correction_weight.copy_(torch.as_tensor(rng.uniform(0.0, 1.0, n_outputs)))
    return committee.eval(), cell, samples


@pytest.mark.parametrize('central', [False, True])
def test_predict_structure_agrees_with_predict_response_and_chi_derivatives(central):
    """One shared density and graph for P and ε∞ gives what the per-model functions give (autograd through
    the committee's position function), with and without central heads."""
    from aiida_mlresponse.ml.radnet.committee import NeighbourCache
    from aiida_mlresponse.ml.radnet.derivatives import chi_derivatives
    from aiida_mlresponse.ml.radnet.predict import predict_response, predict_structure, reference_response

    p_committee, cell, samples = _committee(3, 0, central)
    e_committee, _, _ = _committee(6, 1, central)
    numbers = [31, 33]
    cache = NeighbourCache()
    for positions in samples[:3]:
        out = predict_structure({'polarization': p_committee, 'dielectric': e_committee}, positions, cell, numbers,
                                neighbour_cache=cache)
        p = reference_response(p_committee, {'target': 'polarization'}, positions[None], cell, numbers,
                               with_born_charges=True)
        e = reference_response(e_committee, {'target': 'dielectric'}, positions[None], cell, numbers)
        fast = {**predict_response(p_committee, {'target': 'polarization'}, positions[None], cell, numbers,
                                   with_born_charges=True),
                **predict_response(e_committee, {'target': 'dielectric'}, positions[None], cell, numbers)}
        assert set(fast) == set(p) | set(e)
        for key, expected in {**p, **e}.items():
            np.testing.assert_allclose(out[key], expected[0], rtol=1e-10, atol=1e-12, err_msg=key)
            np.testing.assert_allclose(fast[key], expected, rtol=1e-10, atol=1e-12, err_msg=key)
        dchi = chi_derivatives(e_committee.position_function(cell, numbers, positions), positions)
        np.testing.assert_allclose(out['chi_derivatives'], dchi, rtol=1e-10, atol=1e-12)
    assert all(p.requires_grad for p in p_committee.parameters())  # the models are left as they were
    without = predict_structure({'polarization': p_committee}, samples[0], cell, numbers, derivatives=False)
    assert set(without) == {'polarization', 'polarization_spread'}
    with pytest.raises(ValueError, match='committees'):
        predict_structure({'energy': p_committee}, samples[0], cell, numbers)


@pytest.mark.parametrize('central', [False, True])
def test_forward_and_reverse_mode_derivatives_agree(central):
    """predict_structure's two written-out modes give the same Z* and ∂χ/∂τ (float64 members)."""
    from aiida_mlresponse.ml.radnet.predict import predict_structure

    p_committee, cell, samples = _committee(3, 2, central)
    e_committee, _, _ = _committee(6, 3, central)
    committees = {'polarization': p_committee, 'dielectric': e_committee}
    forward = predict_structure(committees, samples[4], cell, [31, 33], mode='forward')
    reverse = predict_structure(committees, samples[4], cell, [31, 33], mode='reverse')
    for key, value in forward.items():
        np.testing.assert_allclose(value, reverse[key], rtol=1e-11, atol=1e-13 * np.abs(value).max(), err_msg=key)
    with pytest.raises(ValueError, match='mode'):
        predict_structure(committees, samples[4], cell, [31, 33], mode='sideways')
    # The members' stacked tensors (cached by forward mode) follow a change of the weights.
    import torch

    with torch.no_grad():
        p_committee.members[1].atom_network.output.weight.mul_(3.0)
    forward = predict_structure(committees, samples[4], cell, [31, 33], mode='forward')
    changed = predict_structure(committees, samples[4], cell, [31, 33], mode='reverse')
    np.testing.assert_allclose(forward['born_charges'], changed['born_charges'], rtol=1e-11,
                               atol=1e-13 * np.abs(changed['born_charges']).max())
    assert np.abs(changed['born_charges'] - reverse['born_charges']).max() > 1e-6


def test_cube_polynomial_committee_derivatives_in_both_modes_equal_autograd():
    """A 3-atom committee with cube-polynomial and linear Taylor heads (the BN kind of head): both modes against
    autograd through the committee's position function."""
    import torch

    from aiida_mlresponse.ml.radnet.taylor import TaylorBaseline
    from aiida_mlresponse.ml.radnet.committee import Committee
    from aiida_mlresponse.ml.radnet.derivatives import jacobian
    from aiida_mlresponse.ml.radnet.predict import predict_structure

    rng = np.random.default_rng(7)
    cell = np.diag([6.0, 6.5, 7.0]) + 0.2 * rng.standard_normal((3, 3))
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 1.5, 1.0], [1.0, 3.5, 3.0]])
    samples = positions + 0.05 * rng.standard_normal((20, 3, 3))
    torch.manual_seed(7)
    committee = Committee({'n_members': 2, 'central': True, 'member': {
        'preset': 'tiny', 'n_outputs': 3, 'dtype': 'float64', 'taylor': {'degree': 1, 'n_atoms': 3},
        'polynomial': {'components': 4}}})
    heads = [*(m for m in committee.members), committee.central]
    for head in heads:
        head.taylor.set_from(TaylorBaseline(1, 1e-10).fit(samples, rng.standard_normal((20, 3)), cell))
        with torch.no_grad():
            head.polynomial.projection.normal_()
            head.polynomial.coefficients.normal_()
            head.polynomial.input_scale.uniform_(0.5, 2.0)
    for member in committee.members:
        member.set_input_standardization(torch.rand(10, 3, 1, 9, 9, 9, dtype=torch.float64) * 3)
    with torch.no_grad():
        committee.central.correction_weight.copy_(torch.tensor([0.3, 1.0, 0.0]))
    committee.eval()
    x = samples[3]
    volume = abs(np.linalg.det(cell))
    expected = volume * jacobian(committee.position_function(cell, [5, 7, 8], x), x).numpy().transpose(1, 0, 2)
    expected -= expected.mean(axis=0)  # acoustic sum rule, as predict_structure imposes it
    for mode in ('forward', 'reverse'):
        out = predict_structure({'polarization': committee}, x, cell, [5, 7, 8], mode=mode)
        np.testing.assert_allclose(out['born_charges'], expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max(),
                                   err_msg=mode)
