"""Calibrated committee spreads (ml/radnet/calibration.py) and the committee's shortcuts that change no number."""

import pathlib

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.radnet.calibration import apply_spread_calibration, fit_spread_calibration

DATA = pathlib.Path(__file__).parent / 'data'


def test_calibration_recovers_scale_and_floor():
    """Errors drawn with variance (3 s)² + 0.5²: the fit finds that shape, scaled so 90 % lie within 2 σ_cal (for a
    Gaussian: σ_cal = σ · 1.645 / 2)."""
    rng = np.random.default_rng(0)
    spread = np.exp(rng.normal(0, 1, (4000, 2)))
    residual = rng.normal(0, 1, spread.shape) * np.sqrt((3 * spread) ** 2 + 0.5**2)
    calibration = fit_spread_calibration(residual, spread, coverage=0.9)
    assert calibration['rows'] == 4000 and calibration['coverage'] == 0.9
    np.testing.assert_allclose(calibration['scale'], 3.0 * 1.645 / 2, rtol=0.1)
    np.testing.assert_allclose(calibration['floor'], 0.5 * 1.645 / 2, rtol=0.5)
    sigma = apply_spread_calibration(spread, calibration)
    np.testing.assert_allclose((np.abs(residual) <= 2 * sigma).mean(axis=0), 0.9, atol=0.002)
    np.testing.assert_array_equal(apply_spread_calibration(spread, None), spread)
    with pytest.raises(ValueError, match='matching'):
        fit_spread_calibration(residual[:, :1], spread)


@pytest.fixture(scope='module')
def gaas_files(tmp_path_factory):
    """A GaAs P model file written by the training hook with the package defaults (calibrated), and the data."""
    from aiida_mlresponse.ml.radnet.fit import train_from_dataset
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5')
    rows = np.arange(120)
    arrays = {'positions': data.positions[rows] / ANGSTROM_TO_BOHR,
              'cells': np.repeat(data.cell[None] / ANGSTROM_TO_BOHR, len(rows), 0),
              'polarization': data.polarization[rows], 'dielectric_tensor': data.dielectric[rows]}
    path = tmp_path_factory.mktemp('model') / 'p.pt'
    train_from_dataset(arrays, {'atomic_numbers': data.numbers.tolist()},
                       {'target': 'polarization', 'head': {'degrees': [1, 2, 3], 'components': []}}, path, log=None)
    return path, data


def test_calibration_round_trip_through_the_model_file(gaas_files):
    """The calibration is in the file's metadata (not in the hyperparameters) and predict_response applies it."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.radnet.predict import predict_response

    path, data = gaas_files
    committee, payload = checkpoint.load(path)
    metadata = payload['metadata']
    calibration = metadata['spread_calibration']
    assert 'spread_calibration' not in payload['hyperparameters'] and len(calibration['scale']) == 3
    assert calibration['rows'] == 120 and all(a > 0 for a in calibration['scale'])
    positions = data.positions[600:700]
    _, raw = committee.predict_positions(positions, data.cell, data.numbers)
    out = predict_response(committee, metadata, positions, data.cell, data.numbers)
    np.testing.assert_allclose(out['polarization_spread'], apply_spread_calibration(raw, calibration), rtol=1e-12)
    assert (out['polarization_spread'] > raw).all()
    # On configurations it never saw, the calibrated spread covers most errors (the raw one did not).
    error = np.abs(out['polarization'] - data.polarization[600:700])
    assert (error <= 2 * out['polarization_spread']).mean() > 0.7 > (error <= 2 * raw).mean()
    # Z* path: the same calibrated spread.
    with_z = predict_response(committee, metadata, positions[:2], data.cell, data.numbers, with_born_charges=True)
    np.testing.assert_allclose(with_z['polarization_spread'], out['polarization_spread'][:2], rtol=1e-9)


def test_old_committee_file_predicts_the_raw_spread(tmp_path):
    """A model file without `spread_calibration` (written before it existed) returns the members' deviation."""
    from aiida_mlresponse.ml import checkpoint

    committee, payload = checkpoint.load(DATA / 'radnet_committee_v2.pt')
    assert 'spread_calibration' not in payload['metadata']
    assert not committee.cnn_off()  # its members' CNNs count: they are evaluated
    spread = np.random.default_rng(1).random((5, 3))
    np.testing.assert_array_equal(apply_spread_calibration(spread, payload['metadata'].get('spread_calibration')),
                                  spread)


def test_heads_only_committee_skips_the_cnns_and_projects_once(gaas_files):
    """The defaults' committee (CNN weights 0, one shared projection): the fast path gives the same numbers as
    the members' full forward (CNN evaluated, weight 0) and the central heads, to rounding (all heads' polynomial
    coefficients in one matrix product sum in another order)."""
    from aiida_mlresponse.ml.radnet.committee import Committee
    from aiida_mlresponse.ml.radnet.heads import CubePolynomial

    torch.manual_seed(0)
    member = {'preset': 'tiny', 'cube_size': 5, 'n_outputs': 3, 'dtype': 'float64',
              'taylor': {'degree': 2, 'n_atoms': 2}, 'polynomial': {'components': 4}}
    committee = Committee({'n_members': 3, 'central': True, 'member': member,
                           'density': {'n': 5, 'spacing': 1.0, 'sigma': 1.0, 'window_radius': 2.0, 'window_width': 0.5}})
    shared = CubePolynomial(4, 5, 3)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for tensor in (shared.input_mean, shared.input_scale, shared.projection):
            tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) + 0.5)
        for model in [committee.central, *committee.members]:
            model.polynomial.load_state_dict(shared.state_dict())
            model.polynomial.coefficients.copy_(torch.randn(model.polynomial.coefficients.shape, generator=generator,
                                                            dtype=torch.float64))
            model.taylor.coefficients.copy_(torch.randn(model.taylor.coefficients.shape, generator=generator,
                                                        dtype=torch.float64))
            if hasattr(model, 'residual_weight'):
                model.residual_weight.zero_()
                model.output_offset.fill_(1.0)  # a CNN that would add something if its weight were not 0
    cubes = torch.rand(4, 2, 1, 5, 5, 5, generator=generator, dtype=torch.float64)
    positions = torch.rand(4, 2, 3, generator=generator, dtype=torch.float64)
    assert committee.cnn_off() and committee.shared_polynomial() is not None
    with torch.no_grad():
        mean, members = committee.mean_and_members(cubes, positions)
        slow_members = torch.stack([m(cubes, positions) for m in committee.members])
        slow_mean = committee.central(cubes, positions) + committee.central.correction_weight * (
            torch.stack([m.residual_weight * m.correction(cubes) for m in committee.members]).mean(0))
    torch.testing.assert_close(members, slow_members, rtol=1e-14, atol=0)
    torch.testing.assert_close(mean, slow_mean, rtol=1e-14, atol=0)
    # A member with a CNN weight switches the CNNs back on; a member with its own projection, the shared features off.
    with torch.no_grad():
        committee.members[1].residual_weight[0] = 0.5
        committee.members[2].polynomial.projection.mul_(2.0)
    assert not committee.cnn_off() and committee.shared_polynomial() is None
    with torch.no_grad():
        mean, members = committee.mean_and_members(cubes, positions)
    torch.testing.assert_close(members, torch.stack([m(cubes, positions) for m in committee.members]), rtol=0, atol=0)


def test_taylor_only_committee_needs_no_cubes():
    """Members that are Taylor heads only (GaAs's chosen heads) predict from the positions: the same numbers as the
    members' full forward on the cubes."""
    from aiida_mlresponse.ml.radnet.committee import Committee
    from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

    from ..conftest import RADNET_DATA

    data = load_radnet_h5(RADNET_DATA / 'GaAs.h5')
    committee = Committee({'n_members': 3, 'central': True, 'member': {
        'preset': 'tiny', 'n_outputs': 6, 'taylor': {'degree': 3, 'n_atoms': 2}}})
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for model in [committee.central, *committee.members]:
            model.taylor.reference.copy_(torch.as_tensor(data.positions[0]))
            model.taylor.cell.copy_(torch.as_tensor(data.cell))
            model.taylor.scale.fill_(0.03)
            model.taylor.coefficients.copy_(torch.randn(model.taylor.coefficients.shape, generator=generator,
                                                        dtype=torch.float64))
            if hasattr(model, 'residual_weight'):
                model.residual_weight.zero_()
    positions = data.positions[:70]
    mean, spread = committee.predict_positions(positions, data.cell, data.numbers)
    cubes = committee.atom_cubes().batch(positions[64:], data.cell, data.numbers)
    x = torch.as_tensor(positions[64:])
    with torch.no_grad():
        members = torch.stack([m(cubes, x) for m in committee.members])
        np.testing.assert_array_equal(mean[64:], committee.central(cubes, x).numpy())
    np.testing.assert_array_equal(spread[64:], members.std(dim=0).numpy())
