"""Scoring a pool of displaced cells (`committee.predict_pool`, `scoring.predict_models`): the same numbers as the
per-configuration path it replaced, with one neighbour list and one pass of density cubes for P and ε∞."""

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

from ..conftest import RADNET_DATA


@pytest.fixture(scope='module')
def bn_models():
    """P and ε∞ committees of the defaults' shape (8 heads-only members, central heads, one shared cube projection,
    calibrated spread) fitted on 60 BN configurations, as (kind, committee, metadata), and the data."""
    from aiida_mlresponse.ml.radnet.fit import fit_committee, model_metadata

    data = load_radnet_h5(RADNET_DATA / 'BN_cubic.h5')
    rows = np.arange(60)
    models = []
    for target in ('polarization', 'dielectric'):
        committee, _ = fit_committee(data.positions[rows], data.cell, data.numbers, data.targets(target)[rows], target,
                                     hyperparameters={'head': {'degrees': [1], 'components': [8]}}, log=None)
        models.append(('radnet_committee', committee, model_metadata(committee, target, data.cell, data.numbers, 60)))
    return models, data


def reference_cubes(atom_cubes, positions, cell, numbers) -> torch.Tensor:
    """The cubes as `AtomCubes` made them before pool scoring: a neighbour list per configuration (no skin), the
    pairs summed as (n², M) @ (M, n)."""
    n, out = atom_cubes.n, []
    for configuration in positions:
        neighbours = atom_cubes.neighbours(configuration, cell)
        x = torch.as_tensor(configuration, dtype=atom_cubes.dtype)
        vectors = x[neighbours.index] + neighbours.shift.to(x.dtype) @ torch.as_tensor(cell, dtype=x.dtype) - x[:, None]
        weights = (torch.as_tensor(numbers, dtype=x.dtype)[neighbours.index] * neighbours.mask
                   * atom_cubes._switch(vectors))
        gauss = torch.exp(-((atom_cubes.offsets - vectors.unsqueeze(-1)) ** 2) / (2.0 * atom_cubes.sigma**2))
        plane = ((gauss[..., 0, :] * weights[..., None]).unsqueeze(-1) * gauss[..., 1, None, :]).flatten(-2)
        cubes = (plane.transpose(-1, -2) @ gauss[..., 2, :]).reshape(-1, n, n, n) * atom_cubes.window
        out.append(cubes.unsqueeze(1))
    return torch.stack(out)


@pytest.mark.parametrize('outlier', [0.0, 0.6])
def test_pool_scoring_equals_the_per_configuration_path(bn_models, outlier):
    """P and ε∞ of displaced BN cells (σ = 0.03 Å) scored together equal each committee on cubes made one
    configuration at a time, to 1e-5 of the largest value (means) and spread; with an atom 0.6 Bohr out
    (beyond POOL_SKIN / 2) each batch gets its own neighbour list. `predict_columns` gives the same numbers."""
    from aiida_mlresponse.ml.common import voigt_to_tensor
    from aiida_mlresponse.ml.radnet.calibration import apply_spread_calibration
    from aiida_mlresponse.ml.radnet.committee import POOL_SKIN
    from aiida_mlresponse.ml.scoring import predict_columns, predict_models
    from aiida_mlresponse.sampling.displacements import sample_displacements

    models, data = bn_models
    pool = sample_displacements(data.positions.mean(axis=0) / ANGSTROM_TO_BOHR, 0.03, 40, 1)
    pool[7, 3, 0] += outlier / ANGSTROM_TO_BOHR
    positions = pool * ANGSTROM_TO_BOHR
    assert (2 * np.linalg.norm(positions - positions.mean(axis=0), axis=-1).max() > POOL_SKIN) == bool(outlier)
    together = predict_models(models, {'positions': pool})
    cubes = reference_cubes(models[0][1].atom_cubes(), positions, data.cell, data.numbers)  # the same for both
    for kind, committee, metadata in models:
        with torch.no_grad():
            mean, spread = (value.numpy() for value in committee.predict(cubes, torch.as_tensor(positions)))
        spread = apply_spread_calibration(spread, metadata['spread_calibration'])
        column = 'polarization' if metadata['target'] == 'polarization' else 'dielectric_tensor'
        if column == 'dielectric_tensor':
            mean, spread = voigt_to_tensor(mean), voigt_to_tensor(spread)
        for ours, expected in zip(together[column], (mean, spread)):
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
        for ours, alone in zip(together[column], predict_columns(kind, committee, metadata, {'positions': pool})[column]):
            np.testing.assert_array_equal(ours, alone)


def test_cube_polynomial_features_equal_their_definition(bn_models):
    """`CubePolynomial.features` (standardization folded into the projection, products summed as a matrix product)
    against its definition: Σ_I [z_I, z_I,a z_I,b (a <= b)], z_I = projection · (cube_I - mean) / scale."""
    models, data = bn_models
    committee = models[0][1]
    polynomial = committee.shared_polynomial()
    cubes = reference_cubes(committee.atom_cubes(), data.positions[:5], data.cell, data.numbers)
    flat = cubes.flatten(-4).to(torch.float64)
    z = ((flat - polynomial.input_mean) / polynomial.input_scale) @ polynomial.projection.T
    rows, columns = torch.triu_indices(z.shape[-1], z.shape[-1])
    expected = torch.cat([z, z[..., rows] * z[..., columns]], dim=-1).sum(dim=-2)
    torch.testing.assert_close(polynomial.features(cubes), expected, rtol=1e-10, atol=1e-10 * expected.abs().max())


def test_pool_threads_change_no_number(bn_models):
    """The pool's batches scored on two threads give the same numbers as on one, to rounding (the batches are
    independent; only BLAS's own threads may sum in another order)."""
    from aiida_mlresponse.ml.radnet.committee import predict_pool
    from aiida_mlresponse.sampling.displacements import sample_displacements

    models, data = bn_models
    positions = sample_displacements(data.positions.mean(axis=0) / ANGSTROM_TO_BOHR, 0.03, 50, 2) * ANGSTROM_TO_BOHR
    committees = [committee for _, committee, _ in models]
    one = predict_pool(committees, positions, data.cell, data.numbers, batch_size=8, workers=1)
    two = predict_pool(committees, positions, data.cell, data.numbers, batch_size=8, workers=2)
    for (mean_one, spread_one), (mean_two, spread_two) in zip(one, two):
        np.testing.assert_allclose(mean_one, mean_two, rtol=1e-12, atol=0)
        np.testing.assert_allclose(spread_one, spread_two, rtol=1e-12, atol=0)
