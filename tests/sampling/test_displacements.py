import numpy as np
import pytest

from aiida_mlresponse.physics.crystals import gaas
from aiida_mlresponse.sampling.displacements import sample_displacements


def test_displacements_are_seeded_gaussian_and_can_freeze_z():
    _, positions, _ = gaas()
    first = sample_displacements(positions, 0.01, 4000, seed=3)
    np.testing.assert_array_equal(first, sample_displacements(positions, 0.01, 4000, seed=3))
    shifts = first - positions
    assert abs(shifts.std() - 0.01) < 3e-4 and abs(shifts.mean()) < 3e-4
    frozen = sample_displacements(positions, 0.01, 10, seed=3, freeze_z=True)
    np.testing.assert_array_equal(frozen[..., 2], np.broadcast_to(positions[:, 2], (10, 2)))
    assert np.all(frozen[..., :2] != positions[:, :2])


@pytest.mark.parametrize('sigma', [0.0, -0.01, float('nan')])
def test_nonpositive_sigma_refused(sigma):
    with pytest.raises(ValueError, match='must be positive'):
        sample_displacements(np.zeros((2, 3)), sigma, 3, seed=0)
