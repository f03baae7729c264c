"""Density cubes: O(N) neighbour list, translation invariance, periodic images, smooth cutoff, brute force."""

import itertools

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml.radnet.density import AtomCubes, neighbour_pairs
from aiida_mlresponse.physics.crystals import gaas
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

F64 = torch.float64


def gaas_bohr():
    cell, positions, _ = gaas()
    return cell * ANGSTROM_TO_BOHR, positions * ANGSTROM_TO_BOHR, np.array([31, 33])


def random_triclinic(seed, n_atoms=3):
    rng = np.random.default_rng(seed)
    cell = np.diag([7.0, 8.0, 6.5]) + rng.uniform(-1.5, 1.5, (3, 3))
    positions = rng.uniform(0, 1, (n_atoms, 3)) @ cell
    return cell, positions, rng.integers(1, 40, n_atoms)


def brute_force_pairs(positions, cell, cutoff, reach=4):
    found = set()
    for i, j in itertools.product(range(len(positions)), repeat=2):
        for shift in itertools.product(range(-reach, reach + 1), repeat=3):
            if np.linalg.norm(positions[j] + np.array(shift) @ cell - positions[i]) < cutoff:
                found.add((i, j) + shift)
    return found


@pytest.mark.parametrize('seed', [0, 1])
def test_neighbour_pairs_match_brute_force_in_a_skewed_cell(seed):
    cell, positions, _ = random_triclinic(seed, n_atoms=4)
    positions = positions + np.array([[-9.0, 0, 0], [0, 0, 0], [3.0, 14.0, -7.0], [0, 0, 0]])  # outside the cell
    i, j, shift = neighbour_pairs(positions, cell, 9.0)
    found = [(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), shift.tolist())]
    assert len(found) == len(set(found)), 'a pair appears twice'
    assert set(found) == brute_force_pairs(positions, cell, 9.0)


def test_neighbour_pairs_of_a_large_cell_use_the_cell_list():
    """4x4x4 GaAs (128 atoms, several bins per direction): same pairs as brute force."""
    cell, positions, _ = gaas_bohr()
    grid = np.array(list(np.ndindex(4, 4, 4))) @ cell
    big = (grid[:, None] + positions[None]).reshape(-1, 3) + np.random.default_rng(3).normal(0, 0.05, (128, 3))
    cutoff = 10.0
    i, j, shift = neighbour_pairs(big, 4 * cell, cutoff)
    found = set(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))
    assert len(found) == len(i)
    vectors = big[j] + shift @ (4 * cell) - big[i]
    assert np.linalg.norm(vectors, axis=1).max() < cutoff
    # Completeness: count against brute force over one image shell (the cell is wider than the cutoff).
    distances = np.linalg.norm(
        big[None, :, None] + (np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ (4 * cell))[None, None]
        - big[:, None, None], axis=-1)
    assert len(i) == int((distances < cutoff).sum())


def test_translation_invariance():
    cell, positions, numbers = random_triclinic(4)
    cubes = AtomCubes(dtype=F64)
    reference = cubes(positions, cell, numbers)
    for shift in ([0.3, -0.7, 1.1], [25.0, -13.0, 40.0]):  # the second moves atoms across cell boundaries
        np.testing.assert_allclose(cubes(positions + shift, cell, numbers), reference, atol=1e-11)


def test_periodic_images_match_a_supercell():
    """An atom at the cell boundary sees its neighbours' images exactly as the atoms of a 2x3x1 supercell."""
    cell, _, numbers = gaas_bohr()
    positions = np.array([[0.02, 0.01, 0.99], [0.26, 0.23, 0.27]]) @ cell  # atom 0 sits on a face
    cubes = AtomCubes(dtype=F64)
    small = cubes(positions, cell, numbers)
    repeats = np.array(list(np.ndindex(2, 3, 1))) @ cell
    big = cubes((repeats[:, None] + positions[None]).reshape(-1, 3), np.diag([2, 3, 1]) @ cell, np.tile(numbers, 6))
    np.testing.assert_allclose(big, small.repeat(6, 1, 1, 1, 1), atol=1e-11)


def test_cubes_are_continuous_as_a_neighbour_crosses_the_cutoff():
    cubes = AtomCubes(n=9, spacing=0.6, sigma=0.8, window_radius=2.5, cutoff=6.0, switch_width=1.0, dtype=F64)
    cell = np.eye(3) * 40.0
    numbers = [14, 8]

    def centre_cube(distance):
        positions = torch.tensor([[5.0, 5.0, 5.0], [5.0 + distance, 5.0, 5.0]], dtype=F64, requires_grad=True)
        cube = cubes(positions, cell, numbers)[0]
        (gradient,) = torch.autograd.grad(cube.sum(), positions)
        return cube.detach(), gradient

    lone, _ = centre_cube(15.0)
    inside, grad_inside = centre_cube(6.0 - 1e-6)
    outside, grad_outside = centre_cube(6.0 + 1e-6)
    assert torch.equal(outside, lone)  # beyond the cutoff the neighbour is gone
    assert (inside - lone).abs().max() < 1e-12  # ... and just inside it contributes ~nothing
    assert (grad_inside - grad_outside).abs().max() < 1e-9  # C1 as well
    mid, _ = centre_cube(5.5)
    assert (mid - lone).abs().max() > 1e-6  # inside the switch the neighbour is seen


@pytest.mark.parametrize('cutoff, tolerance', [(None, 4e-6 * 33), (16.0, 1e-10)])
def test_agrees_with_brute_force_full_grid(cutoff, tolerance):
    """Slices of ρ̃ evaluated over the whole periodic grid (all atoms, all images) times the window."""
    length, points = 8.0, 16
    h = length / points
    cell = np.eye(3) * length
    grid_index = np.array([[0, 0, 0], [4, 4, 4], [15, 7, 1]])  # centres on grid points, one at the boundary
    positions = grid_index * h
    positions = np.vstack([positions, [3.1, 5.7, 0.2]])  # an off-grid atom (no cube compared)
    numbers = np.array([31, 33, 7, 12])
    cubes = AtomCubes(n=9, spacing=h, sigma=0.7, window_radius=1.8, window_width=0.4, cutoff=cutoff, dtype=F64)
    computed = cubes(positions, cell, numbers)

    axis = np.arange(points) * h
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing='ij'), -1)
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ cell
    full = np.zeros((points,) * 3)
    for position, z in zip(positions, numbers):
        for image in images:
            full += z * np.exp(-((grid - position - image) ** 2).sum(-1) / (2 * 0.7**2))
    window = cubes.window.numpy()
    for atom, index in enumerate(grid_index):
        ranges = [(index[k] + np.arange(-4, 5)) % points for k in range(3)]
        expected = full[np.ix_(*ranges)] * window
        np.testing.assert_allclose(computed[atom, 0].numpy(), expected, atol=tolerance, rtol=0)


def test_batch_and_chunks_agree_with_single_evaluation():
    cell, positions, numbers = gaas_bohr()
    rng = np.random.default_rng(0)
    configurations = positions + rng.normal(0, 0.05, (4, 2, 3))
    cubes = AtomCubes(dtype=F64)
    batch = cubes.batch(configurations, cell, numbers)
    assert batch.shape == (4, 2, 1, 9, 9, 9)
    for b in range(4):
        np.testing.assert_allclose(batch[b], cubes(configurations[b], cell, numbers), atol=1e-12)
    neighbours = cubes.neighbours(configurations[0], cell)
    chunk = cubes.evaluate(configurations[0], cell, numbers, neighbours, centres=[1])
    np.testing.assert_allclose(chunk[0], batch[0, 1], atol=1e-12)


def test_cube_gradient_matches_finite_differences():
    cell, positions, numbers = random_triclinic(7)
    cubes = AtomCubes(n=7, spacing=0.7, sigma=0.9, dtype=F64)
    weights = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 1, 7, 7, 7)))
    neighbours = cubes.neighbours(positions, cell, skin=0.1)

    def scalar(p):
        return (cubes.evaluate(p, cell, numbers, neighbours) * weights).sum()

    x = torch.tensor(positions, requires_grad=True)
    (gradient,) = torch.autograd.grad(scalar(x), x)
    step = 1e-5
    numeric = np.zeros_like(positions)
    for atom, axis in np.ndindex(3, 3):
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        numeric[atom, axis] = (scalar(torch.tensor(plus)) - scalar(torch.tensor(minus))).item() / (2 * step)
    np.testing.assert_allclose(gradient.numpy(), numeric, rtol=1e-6, atol=1e-8)
    assert abs(gradient.sum(0)).max() < 1e-9  # translation invariance


def test_float32_and_bad_arguments():
    cell, positions, numbers = gaas_bohr()
    cubes32 = AtomCubes()(positions, cell, numbers)
    assert cubes32.dtype == torch.float32
    np.testing.assert_allclose(cubes32, AtomCubes(dtype=F64)(positions, cell, numbers), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match='odd'):
        AtomCubes(n=8)
    with pytest.raises(ValueError, match='positive'):
        AtomCubes(sigma=0)


def _looped_neighbour_pairs(positions, cell, cutoff):
    """The earlier implementation (one numpy pass per bin offset, then a stable sort by centre): the reference
    for the vectorized `neighbour_pairs`, which must return the same pairs in the same order."""
    fractional = positions @ np.linalg.inv(cell)
    wrap = np.floor(fractional)
    fractional -= wrap
    wrapped = fractional @ cell
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    n_bins = np.maximum(1, np.floor(spacing / cutoff).astype(int))
    reach = np.ceil(cutoff * n_bins / spacing - 1e-12).astype(int)
    bins = np.minimum((fractional * n_bins).astype(int), n_bins - 1)
    flat = np.ravel_multi_index(bins.T, n_bins)
    order = np.argsort(flat, kind='stable')
    counts = np.bincount(flat, minlength=int(np.prod(n_bins)))
    slot = np.arange(len(positions)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[flat[order]]
    table = np.full((len(counts), max(1, counts.max())), -1, dtype=np.int64)
    table[flat[order], slot] = order
    found = []
    for offset in itertools.product(*(range(-r, r + 1) for r in reach)):
        target = bins + np.array(offset)
        bin_shift = np.floor_divide(target, n_bins)
        target -= bin_shift * n_bins
        candidates = table[np.ravel_multi_index(target.T, n_bins)]
        i = np.broadcast_to(np.arange(len(positions))[:, None], candidates.shape)
        vectors = wrapped[candidates] + (bin_shift @ cell)[:, None, :] - wrapped[i]
        keep = (candidates >= 0) & ((vectors**2).sum(-1) < cutoff**2)
        i, j = i[keep], candidates[keep]
        shift = np.broadcast_to(bin_shift[:, None, :], candidates.shape + (3,))[keep] + wrap[i] - wrap[j]
        found.append((i, j, shift))
    i, j, shift = (np.concatenate(parts) for parts in zip(*found))
    order = np.argsort(i, kind='stable')
    return i[order], j[order], shift[order].astype(np.int64)


@pytest.mark.parametrize('block', [None, 7])
def test_vectorized_neighbour_pairs_equal_the_looped_ones(block, monkeypatch):
    """Same (i, j, S) in the same order as the per-offset loop: small cells (many images), a skewed cell with
    atoms outside it, and a 128-atom cell (several bins); `block` forces several blocks of centre atoms."""
    from aiida_mlresponse.ml.radnet import density

    if block is not None:
        monkeypatch.setattr(density, '_PAIR_BLOCK', block * 27 * 8)
    cell, positions, _ = gaas_bohr()
    skewed, skewed_positions, _ = random_triclinic(4, n_atoms=5)
    grid = np.array(list(np.ndindex(4, 4, 4))) @ cell
    big = (grid[:, None] + positions[None]).reshape(-1, 3) + np.random.default_rng(3).normal(0, 0.05, (128, 3))
    cases = [(positions, cell, 12.5), (skewed_positions + np.array([-9.0, 2.0, 15.0]), skewed, 9.0),
             (big, 4 * cell, 10.0)]
    for x, c, cutoff in cases:
        for ours, reference in zip(neighbour_pairs(x, c, cutoff), _looped_neighbour_pairs(x, c, cutoff)):
            np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize('skin', [0.0, 0.8])
def test_written_out_pullback_equals_autograd(skin):
    """cubes_and_pullback: the cubes of `evaluate` and, for a batch of cotangents, the batched autograd backward,
    with pairs inside the switch (a short cutoff) and pairs beyond the cutoff (a list built with a skin)."""
    cell, positions, numbers = random_triclinic(8, n_atoms=4)
    cubes = AtomCubes(n=7, spacing=0.7, sigma=0.9, cutoff=5.5, switch_width=1.5, dtype=F64)
    neighbours = cubes.neighbours(positions, cell, skin=skin)
    moved = positions + 0.3 * skin * np.random.default_rng(2).uniform(-1, 1, positions.shape) / np.sqrt(3)
    x = torch.tensor(moved, requires_grad=True)
    expected = cubes.evaluate(x, cell, numbers, neighbours)
    cotangents = torch.from_numpy(np.random.default_rng(3).normal(size=(5,) + tuple(expected.shape)))
    (backward,) = torch.autograd.grad(expected, x, cotangents, is_grads_batched=True)
    ours, pullback = cubes.cubes_and_pullback(moved, cell, numbers, neighbours)
    np.testing.assert_allclose(ours.numpy(), expected.detach().numpy(), rtol=0, atol=1e-14)
    scale = backward.abs().max().item()
    np.testing.assert_allclose(pullback(cotangents).numpy(), backward.numpy(), rtol=1e-12, atol=1e-13 * scale)


def test_written_out_tangents_equal_the_autograd_jacobian():
    """cubes_and_tangents: ∂cube_I/∂R_Jβ for every J (and for J >= 1 with skip_first) against autograd."""
    cell, positions, numbers = random_triclinic(9, n_atoms=3)
    cubes = AtomCubes(n=7, spacing=0.7, sigma=0.9, cutoff=5.5, switch_width=1.5, dtype=F64)
    neighbours = cubes.neighbours(positions, cell, skin=0.4)
    x = torch.tensor(positions)
    expected = torch.autograd.functional.jacobian(lambda p: cubes.evaluate(p, cell, numbers, neighbours), x)
    expected = expected.permute(5, 6, 0, 1, 2, 3, 4).reshape(9, 3, 1, 7, 7, 7)  # [J·3 + β, I]
    values, tangents = cubes.cubes_and_tangents(x, cell, numbers, neighbours)
    np.testing.assert_allclose(values.numpy(), cubes.evaluate(x, cell, numbers, neighbours).numpy(), rtol=0, atol=0)
    scale = expected.abs().max().item()
    np.testing.assert_allclose(tangents.numpy(), expected.numpy(), rtol=1e-12, atol=1e-13 * scale)
    _, moved = cubes.cubes_and_tangents(x, cell, numbers, neighbours, skip_first=True)
    np.testing.assert_allclose(moved.numpy(), expected[3:].numpy(), rtol=1e-12, atol=1e-13 * scale)


def test_negligible_beyond_bounds_what_a_far_pair_adds_to_any_voxel():
    """`AtomCubes.negligible_beyond(tol)`: a unit charge at that distance (in any direction) adds less than tol to every
    voxel, one 0.3 Bohr closer, along the worst voxel's direction, adds more; and BN pool cubes from a list cut there
    (tolerance 1e-9) equal the full-cutoff cubes to 1e-9 per dropped pair and unit charge."""
    cubes = AtomCubes(dtype=F64)
    tolerance = 1e-9
    reach = cubes.negligible_beyond(tolerance)
    assert 9.5 < reach < cubes.cutoff
    grid = torch.stack(torch.meshgrid(cubes.offsets, cubes.offsets, cubes.offsets, indexing='ij'), dim=-1).reshape(-1, 3)
    window = cubes.window.reshape(-1)

    def largest_voxel(source):
        return float((window * torch.exp(-((grid - source) ** 2).sum(-1) / (2 * cubes.sigma**2))).max())

    rng = np.random.default_rng(0)
    for direction in rng.normal(size=(20, 3)):
        assert largest_voxel(torch.as_tensor(reach * direction / np.linalg.norm(direction))) < tolerance
    radius = grid.norm(dim=-1)
    bound = window * torch.exp(-(torch.clamp(reach - 0.3 - radius, min=0)) ** 2 / (2 * cubes.sigma**2))
    worst = int(bound.argmax())
    assert largest_voxel(grid[worst] / radius[worst] * (reach - 0.3)) > tolerance

    from aiida_mlresponse.physics.crystals import bn_cubic
    cell, positions, symbols = bn_cubic()
    cell, positions = np.asarray(cell) * ANGSTROM_TO_BOHR, np.asarray(positions) * ANGSTROM_TO_BOHR
    numbers = np.array([{'B': 5, 'N': 7}[symbol] for symbol in symbols])
    full = cubes.neighbours(positions, cell)
    cut = cubes.neighbours(positions, cell, tolerance=tolerance)
    assert cut.n_pairs < 0.8 * full.n_pairs  # (10.0 / 12)³ = 0.58 of the volume; the 2-atom cell's shells are coarse
    dropped = full.n_pairs - cut.n_pairs
    difference = (cubes.evaluate(positions, cell, numbers, full) - cubes.evaluate(positions, cell, numbers, cut)).abs().max()
    assert 0 < difference < tolerance * max(numbers) * dropped / len(positions)
