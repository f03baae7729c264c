"""Committee: mean and spread of the members, bootstrap resampling, members differ."""

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.committee import Committee, resample, train_committee
from aiida_mlresponse.ml.training import TrainingConfig


def test_bootstrap_and_split_resampling():
    sample, out_of_bag = resample(200, seed=3)
    assert len(sample) == 200 and len(np.unique(sample)) < 200  # with replacement
    assert set(out_of_bag).isdisjoint(sample) and set(out_of_bag) | set(sample) == set(range(200))
    assert 0.25 < len(out_of_bag) / 200 < 0.5  # ~ e^-1 out of bag
    other, _ = resample(200, seed=4)
    assert not np.array_equal(np.sort(sample), np.sort(other))
    train, validation = resample(100, seed=0, resampling='split', holdout=0.2)
    assert len(validation) == 20 and set(train).isdisjoint(validation) and len(set(train)) == 80
    with pytest.raises(ValueError):
        resample(10, 0, resampling='jackknife')


def test_committee_mean_and_spread_are_those_of_the_members():
    torch.manual_seed(0)
    committee = Committee({'n_members': 3, 'member': {'preset': 'tiny', 'n_outputs': 6}})
    cubes = torch.rand(5, 2, 1, 9, 9, 9)
    with torch.no_grad():
        each = np.stack([member(cubes).numpy() for member in committee.members])
        mean, spread = committee.predict(cubes)
    assert committee(cubes).shape == (3, 5, 6)
    np.testing.assert_allclose(mean.numpy(), each.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(spread.numpy(), each.std(axis=0, ddof=1), rtol=1e-10)
    assert (spread.numpy() > 0).all()


def test_committee_checks_its_hyperparameters():
    with pytest.raises(ValueError, match='cube size'):
        Committee({'n_members': 2, 'member': {'preset': 'tiny', 'cube_size': 7}})
    with pytest.raises(ValueError, match='unknown radnet hyperparameters'):
        Committee({'n_members': 2, 'member': {'preset': 'tiny', 'channels': 3}})


@pytest.mark.slow
def test_trained_members_differ_and_spread_grows_off_the_data():
    """Members trained on different bootstrap samples agree on the data and disagree far from it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cubes = torch.rand(40, 2, 1, 9, 9, 9, generator=torch.Generator().manual_seed(1)) * 0.2
    targets = cubes.sum(dim=(1, 2, 3, 4, 5)).numpy()[:, None] * np.array([[1.0, -2.0, 0.5]])
    positions = rng.standard_normal((40, 2, 3))
    committee, results = train_committee(
        cubes, positions, targets, 10 * np.eye(3), n_members=3,
        member_hyperparameters={'preset': 'tiny', 'n_outputs': 3},
        config=TrainingConfig(epochs=8, batch_size=8, learning_rate=3e-3), log=None)
    assert len(results) == 3
    first = [p.detach().clone() for p in committee.members[0].parameters()]
    second = list(committee.members[1].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    with torch.no_grad():
        _, spread_on = committee.predict(cubes)
        _, spread_off = committee.predict(cubes + 5.0)
    assert spread_off.mean() > spread_on.mean()


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: small trainings run faster on one thread than fighting for two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
