"""Predictions of a trained radnet committee for many structures: mean, spread and Born charges."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ...physics.born import impose_acoustic_sum_rule
from ..common import torch_threads, voigt_to_tensor
from .calibration import apply_spread_calibration
from .committee import NeighbourCache, predict_pool
from .derivatives import born_charges, chi_derivatives


#: Cells up to this many atoms are predicted on one torch thread: their tensors are too small for threads to pay
#: off (torch's default threads made the GaAs prediction 26x slower on 2 cores, benchmarks/radnet_speed.py).
SMALL_CELL_ATOMS = 64


def predict_response(committee, metadata: dict, positions, cell, numbers, with_born_charges: bool = False) -> dict:
    """Committee mean and spread for configurations (n, N, 3) Bohr of one cell (3, 3) Bohr.

    Returns arrays with the units of `metadata['target']`: P (n, 3) e/Bohr² or ε∞ (n, 3, 3), their
    spreads (the members' standard deviation, calibrated by the metadata's ``spread_calibration`` when the model
    file has one: `calibration.py`), and for a P model on request Z* (n, N, 3, 3) in e,
    acoustic sum rule imposed. The fast paths: values of many configurations in batches
    (`Committee.predict_positions`), Z* per configuration by `predict_structure` with one neighbour list for
    all (displaced copies of one cell); small cells on one torch thread. `reference_response` is the earlier
    autograd path, kept for tests.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
    if with_born_charges and metadata['target'] != 'polarization':
        raise ValueError('Born charges need a polarization model; this model predicts the dielectric tensor.')
    if not with_born_charges:
        return predict_responses([(committee, metadata)], positions, cell, numbers)[0]
    with torch_threads(1 if len(numbers) <= SMALL_CELL_ATOMS else None):
        cache = NeighbourCache()
        each = [predict_structure({'polarization': committee}, configuration, cell, numbers, neighbour_cache=cache)
                for configuration in positions]
    out = {key: np.stack([one[key] for one in each]) for key in ('polarization', 'polarization_spread', 'born_charges')}
    out['polarization_spread'] = apply_spread_calibration(out['polarization_spread'], metadata.get('spread_calibration'))
    return out


def predict_responses(models: list, positions, cell, numbers) -> list:
    """`predict_response` without Z* for several committees of one cell, models [(committee, metadata)], on the same
    configurations (n, N, 3) Bohr: committees with the same density (a P and an ε∞ committee) share one pass of
    density cubes (`committee.predict_pool`), the cost of scoring a pool. Small cells on one torch thread."""
    positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
    with torch_threads(1 if len(numbers) <= SMALL_CELL_ATOMS else None):
        values = predict_pool([committee for committee, _ in models], positions, cell, numbers)
    out = []
    for (_, metadata), (mean, spread) in zip(models, values):
        spread = apply_spread_calibration(spread, metadata.get('spread_calibration'))
        if metadata['target'] == 'polarization':
            out.append({'polarization': mean, 'polarization_spread': spread})
        else:
            out.append({'dielectric_tensor': voigt_to_tensor(mean), 'dielectric_tensor_spread': voigt_to_tensor(spread)})
    return out


def reference_response(committee, metadata: dict, positions, cell, numbers, with_born_charges: bool = False) -> dict:
    """`predict_response` as it was computed before `predict_structure`: values in batches, Z* by autograd
    through `Committee.position_function` and `derivatives.born_charges`. Slower; the reference for tests."""
    positions = np.asarray(positions, dtype=float).reshape(-1, len(numbers), 3)
    mean, spread = committee.predict_positions(positions, cell, numbers)
    target = metadata['target']
    out = {}
    if target == 'polarization':
        out['polarization'], out['polarization_spread'] = mean, spread
    else:
        out['dielectric_tensor'], out['dielectric_tensor_spread'] = voigt_to_tensor(mean), voigt_to_tensor(spread)
    if with_born_charges:
        if target != 'polarization':
            raise ValueError('Born charges need a polarization model; this model predicts the dielectric tensor.')
        volume = abs(np.linalg.det(cell))
        out['born_charges'] = np.stack([
            born_charges(committee.position_function(cell, numbers, config), config, volume=volume)
            for config in positions
        ])
    return out


@contextlib.contextmanager
def _native_convolutions():
    """No oneDNN convolutions inside (restored on exit): for the cubes of a few atoms the native CPU kernels are
    faster (the CNN's value and input Jacobian: 0.47 against 1.1 ms per GaAs member, measured with one thread)."""
    mkldnn = torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = False
        yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn


def predict_structure(committees: dict, positions, cell, numbers, derivatives: bool = True,
                      neighbour_cache: NeighbourCache | None = None, mode: str = 'auto') -> dict:
    """Everything per structure from committees already in memory, with one density for all.

    committees: {'polarization': P committee, 'dielectric': ε∞ committee} (either may be left out); they must
    share their density hyperparameters. positions (N, 3), cell (3, 3) Bohr. The float64 cubes are made once
    (neighbour list from `neighbour_cache`, reused for displaced copies of the same cell) and both committees
    are evaluated on them; with `derivatives`, Z* (N, 3, 3) e and ∂χ/∂τ (N, 3, 3, 3) Bohr⁻¹ [κ, γ, α, β] come from
    written-out reverse-mode derivatives (every output component at once, no autograd graph: for a small cell
    autograd's bookkeeping cost more than the arithmetic), acoustic sum rule imposed, as
    `derivatives.born_charges` and `derivatives.chi_derivatives` give them by autograd. Values and spreads as
    `predict_response` (one configuration, no leading axis), from float64 rather than float32 cubes (the CNN
    still runs in its own dtype). mode: 'forward' or 'reverse' derivatives, or 'auto' (the cheaper, below).
    """
    if mode not in ('auto', 'forward', 'reverse'):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    unknown = set(committees) - {'polarization', 'dielectric'}
    if unknown or not committees:
        raise ValueError(f"committees must be keyed by 'polarization' and/or 'dielectric', got {sorted(committees)}")
    first = next(iter(committees.values()))
    if any(c.hyperparameters['density'] != first.hyperparameters['density'] for c in committees.values()):
        raise ValueError('the committees were trained on different density cubes: predict them separately')
    positions = np.asarray(positions, dtype=float).reshape(len(numbers), 3)
    atom_cubes = first.atom_cubes(torch.float64)
    neighbours = (neighbour_cache or NeighbourCache()).get(atom_cubes, positions, cell)
    x = torch.as_tensor(positions, dtype=torch.float64)
    # Forward mode (3(N-1) tangent cubes per cube: atom 0 follows from translation invariance) when it is about the
    # smaller batch: the networks' forward convolutions cost about half the transposed ones of reverse mode (K
    # cotangents per cube), measured on CPU for 2-atom GaAs.
    forward_mode = derivatives and (mode == 'forward' or mode == 'auto' and 3 * (len(numbers) - 1) <= 2 * min(
        c.members[0].n_outputs for c in committees.values()))
    out, cube_grads, position_grads = {}, [], []
    # No autograd: every derivative is written out (tests compare them with autograd and finite differences).
    with contextlib.nullcontext() if forward_mode else _native_convolutions(), torch.no_grad():
        tangents = None
        if forward_mode:
            density, tangents = atom_cubes.cubes_and_tangents(x, cell, numbers, neighbours, skip_first=True)
        elif derivatives:
            density, pullback = atom_cubes.cubes_and_pullback(x, cell, numbers, neighbours)  # (N, 1, n, n, n)
        else:
            density = atom_cubes.evaluate(x, cell, numbers, neighbours)
        for target, committee in committees.items():
            if derivatives:
                mean, values, cube_grad, position_grad = committee.values_and_jacobians(density, x, tangents)
                if position_grad is None:
                    position_grad = torch.zeros(len(mean), len(numbers), 3, dtype=torch.float64)
                cube_grads.append(cube_grad)
                position_grads.append(position_grad)
            else:
                mean, values = committee.mean_and_members(density.unsqueeze(0), x.unsqueeze(0))
                mean, values = mean[0], values[:, 0]  # (n_outputs,), (members, n_outputs)
            mean = mean.numpy()
            spread = (values.std(dim=0) if len(values) > 1 else torch.zeros_like(values[0])).numpy()
            if target == 'polarization':
                out['polarization'], out['polarization_spread'] = mean, spread
            else:
                out['dielectric_tensor'] = voigt_to_tensor(mean)
                out['dielectric_tensor_spread'] = voigt_to_tensor(spread)
        if not derivatives:
            return out
        # ∂X/∂positions of every output of both committees: in reverse mode ∂X/∂cubes chained through the density
        # in one pullback, plus the Taylor heads' direct dependence on the positions.
        jacobian = torch.cat(position_grads)
        if not forward_mode:
            jacobian = jacobian + pullback(torch.cat(cube_grads))
    jacobian = jacobian.numpy()  # (K, N, 3)
    start = 0
    for target in committees:
        size = 3 if target == 'polarization' else 6
        block, start = jacobian[start:start + size], start + size
        if target == 'polarization':
            volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
            out['born_charges'] = impose_acoustic_sum_rule(volume * block.transpose(1, 0, 2))
        else:
            dchi = voigt_to_tensor(np.moveaxis(block, 0, -1)) / (4.0 * math.pi)
            out['chi_derivatives'] = impose_acoustic_sum_rule(dchi)
    return out


def committee_response_tensors(polarization, dielectric, positions, cell, numbers) -> dict:
    """ε∞ (3, 3), Z* (N, 3, 3) e and ∂χ/∂τ (N, 3, 3, 3) Bohr⁻¹ [κ, γ, α, β] of the committee mean at one structure
    (positions (N, 3), cell (3, 3) Bohr), and the same of every member under `<name>_members` (leading axis M), by
    autograd (`derivatives.born_charges`, `chi_derivatives`, acoustic sum rule imposed). The committee mean is the
    central heads' prediction when the committee has them, else the members' mean. A property derived from the
    tensors (LO frequencies, Raman tensors, spectra) evaluated member by member gives that property's committee
    band. The two committees must have as many members (they are paired member by member).
    """
    if len(polarization) != len(dielectric):
        raise ValueError(f'the P and ε∞ committees have {len(polarization)} and {len(dielectric)} members: '
                         'a committee band needs them paired')
    positions = np.asarray(positions, dtype=float).reshape(len(numbers), 3)
    volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
    out = {'epsilon': [], 'born_charges': [], 'dchi_dtau': []}
    with torch_threads(1 if len(numbers) <= SMALL_CELL_ATOMS else None):
        for member in [None, *range(len(polarization))]:
            p_function = polarization.position_function(cell, numbers, positions, member=member)
            e_function = dielectric.position_function(cell, numbers, positions, member=member)
            with torch.no_grad():
                out['epsilon'].append(voigt_to_tensor(e_function(positions).double().numpy()))
            out['born_charges'].append(born_charges(p_function, positions, volume=volume))
            out['dchi_dtau'].append(chi_derivatives(e_function, positions))
    result = {}
    for name, values in out.items():
        result[name], result[f'{name}_members'] = values[0], np.stack(values[1:])
    return result
