"""Acquisition for active learning (METHODS.md part C): score a candidate pool, reject, select.

Arrays in, arrays out; no aiida, no torch. The active-learning work chain calls these once per
round on the committee's predictions for the pool and records every decision they return.

- **Score.** The committee spread relative to the size of the quantity: per target, the spread of
  each component divided by the target's scale (`label_scale`: how much its training labels vary),
  then the largest over components and targets. A spread in ε∞ of 1e-4
  and one in P of 1e-4 are then not the same thing.
- **Trust levels** (DP-GEN style): score < lo: learned; lo <= score < hi: candidate; score >= hi:
  not trusted (too far from the data to label blindly). In calibrated mode the score is first
  converted to an expected error by `calibrate`, and lo/hi are in units of relative error.
- **Physics cut.** A candidate whose prediction breaks what must hold is rejected before any
  ABINIT run (`physics_rejections`): atoms closer than a minimum distance, a cell of non-positive
  volume, a predicted ε∞ that is not positive definite, Z* violating the acoustic sum rule.
- **Selection.** Candidates ranked by score, thinned greedily so no two picks are closer than
  `min_separation` in descriptor space, at most `batch`. For strain, a share of the batch can go to the
  candidates whose predicted softest strain mode is weakest (closest to an elastic instability, where the
  seed's model was weakest), ranked by that stiffness instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LEARNED, CANDIDATE, UNTRUSTED, REJECTED = 'learned', 'candidate', 'untrusted', 'rejected'
SPREAD_RULE = 'highest score among candidates, diversity kept'
INSTABILITY_RULE = 'softest predicted strain mode among candidates (closest to an instability), diversity kept'


def label_scale(labels: np.ndarray, floor: float = 1e-12) -> float:
    """The size of a quantity's variation in the training labels: the standard deviation over rows of
    each component, root-mean-squared over components (the mean value itself, e.g. ε∞'s diagonal, does
    not count: a committee must resolve the variation, not the offset)."""
    labels = np.asarray(labels, dtype=float).reshape(len(labels), -1)
    return max(float(np.sqrt(np.mean(np.var(labels, axis=0)))), floor)


def relative_spread(spreads: dict, scales: dict) -> np.ndarray:
    """Per candidate, max over targets and components of spread / scale (targets: name -> (N, ...))."""
    per_target = [np.asarray(spreads[name], dtype=float).reshape(len(spreads[name]), -1).max(1) / scales[name]
                  for name in spreads]
    return np.max(np.stack(per_target, 1), axis=1)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Expected relative error = factor × relative spread, fitted on configurations just labelled.

    `factor` is the `quantile` of |error| / spread over those rows (default 0.9: nine errors in ten
    lie within factor × spread); `rows` says how many rows it rests on.
    """
    factor: float
    quantile: float
    rows: int

    def apply(self, score: np.ndarray) -> np.ndarray:
        return self.factor * np.asarray(score)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def calibrate(scores: np.ndarray, errors: np.ndarray, quantile: float = 0.9, floor: float = 1e-12) -> Calibration:
    """Fit `Calibration` from relative spreads and relative errors (same normalisation) of labelled rows."""
    scores, errors = np.asarray(scores, dtype=float), np.abs(np.asarray(errors, dtype=float))
    if scores.shape != errors.shape or len(scores) == 0:
        raise ValueError(f'need matching non-empty scores and errors, got {scores.shape} and {errors.shape}.')
    ratios = errors / np.maximum(scores, floor)
    return Calibration(float(np.quantile(ratios, quantile)), quantile, int(len(scores)))


def trust_partition(score: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """LEARNED / CANDIDATE / UNTRUSTED per candidate."""
    if not 0 <= lo < hi:
        raise ValueError(f'trust levels need 0 <= lo < hi, got lo={lo}, hi={hi}.')
    score = np.asarray(score, dtype=float)
    return np.where(score < lo, LEARNED, np.where(score < hi, CANDIDATE, UNTRUSTED))


def minimum_distances(positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Shortest interatomic distance of each configuration (minimum image over the 27 neighbouring cells)."""
    positions, cells = np.asarray(positions, dtype=float), np.asarray(cells, dtype=float)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    delta = positions[:, :, None, :] - positions[:, None, :, :]  # (N, n, n, 3)
    images = np.einsum('sk,nkc->nsc', shifts, cells)  # (N, 27, 3)
    distances = np.linalg.norm(delta[:, :, :, None, :] + images[:, None, None, :, :], axis=-1)  # (N, n, n, 27)
    n = positions.shape[1]
    self_image = np.zeros_like(distances, dtype=bool)
    self_image[:, np.arange(n), np.arange(n), 13] = True  # shift (0, 0, 0) of an atom with itself
    return np.where(self_image, np.inf, distances).min(axis=(1, 2, 3))


def physics_rejections(positions=None, cells=None, dielectric=None, born_charges=None,
                       min_distance: float = 0.5, asr_tolerance: float = 0.1) -> list[list[str]]:
    """Per candidate, the rules its structure or prediction breaks (empty list: none).

    positions (N, n, 3) and cells (N, 3, 3) in one length unit, with `min_distance` in it;
    dielectric (N, 3, 3) the predicted ε∞; born_charges (N, n, 3, 3) the predicted Z* (e), whose sum
    over atoms must vanish to `asr_tolerance` (largest element, e).
    """
    arrays = [a for a in (positions, cells, dielectric, born_charges) if a is not None]
    if not arrays:
        raise ValueError('nothing to check.')
    reasons = [[] for _ in range(len(arrays[0]))]
    if cells is not None:
        volumes = np.linalg.det(np.asarray(cells, dtype=float))
        for row in np.flatnonzero(volumes <= 0):
            reasons[row].append(f'cell volume {volumes[row]:.4g} <= 0')
    if positions is not None and cells is not None:
        shortest = minimum_distances(positions, cells)
        for row in np.flatnonzero(shortest < min_distance):
            reasons[row].append(f'atoms {shortest[row]:.3f} apart < {min_distance}')
    if dielectric is not None:
        eps = np.asarray(dielectric, dtype=float)
        lowest = np.linalg.eigvalsh(0.5 * (eps + np.swapaxes(eps, 1, 2)))[:, 0]
        for row in np.flatnonzero(lowest <= 0):
            reasons[row].append(f'ε∞ not positive definite (lowest eigenvalue {lowest[row]:.3g})')
    if born_charges is not None:
        violation = np.abs(np.asarray(born_charges, dtype=float).sum(axis=1)).reshape(len(born_charges), -1).max(1)
        for row in np.flatnonzero(violation > asr_tolerance):
            reasons[row].append(f'Z* acoustic sum rule broken by {violation[row]:.3g} e > {asr_tolerance}')
    return reasons


def displacement_descriptor(positions: np.ndarray, reference_positions: np.ndarray) -> np.ndarray:
    """(N, 3n): the displacement pattern with the rigid translation removed (it changes no label)."""
    delta = np.asarray(positions, dtype=float) - np.asarray(reference_positions, dtype=float)[None]
    delta -= delta.mean(axis=1, keepdims=True)
    return delta.reshape(len(delta), -1)


def select(scores: np.ndarray, eligible: np.ndarray, descriptors: np.ndarray, batch: int,
           min_separation: float = 0.0, picked_before=(), rule: str = SPREAD_RULE) -> tuple[np.ndarray, list[dict]]:
    """Greedy pick by descending score among `eligible`, skipping any closer than `min_separation`
    (Euclidean, descriptor space) to an earlier pick (`picked_before` included); at most `batch`.

    Returns (picked row indices, one record per eligible row looked at: row, rank, score, decision, rule,
    and for a skipped one the pick it was too close to).
    """
    scores, eligible = np.asarray(scores, dtype=float), np.asarray(eligible, dtype=bool)
    descriptors = np.asarray(descriptors, dtype=float).reshape(len(scores), -1)
    order = [int(row) for row in np.argsort(-scores, kind='stable') if eligible[row]]
    before = [int(row) for row in picked_before]
    picked: list[int] = []
    records = []
    for rank, row in enumerate(order):
        if len(picked) == batch:
            break
        record = {'row': row, 'rank': rank, 'score': float(scores[row]), 'rule': rule}
        taken = before + picked
        if taken and min_separation > 0:
            distances = np.linalg.norm(descriptors[taken] - descriptors[row], axis=1)
            nearest = int(np.argmin(distances))
            if distances[nearest] < min_separation:
                records.append({**record, 'decision': 'skipped: too close',
                                'near_pick': taken[nearest], 'distance': float(distances[nearest])})
                continue
        picked.append(row)
        records.append({**record, 'decision': 'picked'})
    return np.array(picked, dtype=int), records


def median_neighbour_distance(descriptors: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median nearest-neighbour distance in descriptor space (on a random subset for large pools)."""
    descriptors = np.asarray(descriptors, dtype=float).reshape(len(descriptors), -1)
    if len(descriptors) < 2:
        return 0.0
    rows = np.random.default_rng(seed).permutation(len(descriptors))[:sample]
    subset = descriptors[rows]
    squared = (subset ** 2).sum(1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * subset @ subset.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(1)))


@dataclasses.dataclass
class RoundPlan:
    """One round's decisions on a pool: scores, partition, reasons for rejects, picks and their records."""
    relative_spread: np.ndarray
    score: np.ndarray  # relative spread, or expected relative error when calibrated
    partition: np.ndarray  # LEARNED / CANDIDATE / UNTRUSTED / REJECTED / 'labelled' per row
    reasons: list  # per row, the physics rules it breaks
    picked: np.ndarray
    records: list
    min_separation: float
    calibration: Calibration | None


def plan_round(spreads: dict, scales: dict, lo: float, hi: float, batch: int, descriptors: np.ndarray,
               labelled: np.ndarray, reasons: list, calibration: Calibration | None = None,
               min_separation: float | None = None, shortlist_check=None, stiffness: np.ndarray | None = None,
               instability_share: float = 0.0) -> RoundPlan:
    """Score, partition, cut and select one round's picks: the one place both the active-learning work chain
    and the benchmark take their decisions from.

    `labelled` marks pool rows already in the dataset; `reasons` holds the physics rules each row breaks
    (`physics_rejections`); `shortlist_check(rows) -> reasons` (optional) checks a costly rule on the best
    candidates only (4 × batch); `min_separation` None: half the median nearest-neighbour distance of the
    eligible candidates in descriptor space. `stiffness` (strain only): per row, the predicted lowest
    strain-Hessian eigenvalue relative to the reference cell's; then `instability_share` of the batch goes to
    the candidates with the softest mode (closest to an instability), the rest by score.
    """
    if not 0.0 <= instability_share <= 1.0:
        raise ValueError(f'instability_share must lie in [0, 1], got {instability_share}.')
    raw = relative_spread(spreads, scales)
    score = calibration.apply(raw) if calibration else raw
    partition = trust_partition(score, lo, hi).astype(object)
    partition[np.asarray(labelled, dtype=bool)] = 'labelled'
    reasons = [list(r) for r in reasons]
    if shortlist_check is not None:
        shortlist = [int(r) for r in np.argsort(-score, kind='stable') if partition[r] == CANDIDATE and not reasons[r]][: 4 * batch]
        if shortlist:
            for row, extra in zip(shortlist, shortlist_check(shortlist)):
                reasons[row].extend(extra)
    rejected = np.array([bool(r) and p in (CANDIDATE, UNTRUSTED) for r, p in zip(reasons, partition)], dtype=bool)
    partition[rejected] = REJECTED
    eligible = partition == CANDIDATE
    descriptors = np.asarray(descriptors, dtype=float).reshape(len(score), -1)
    if min_separation is None:
        min_separation = 0.5 * median_neighbour_distance(descriptors[eligible]) if eligible.sum() > 1 else 0.0
    n_soft = int(round(instability_share * batch)) if stiffness is not None else 0
    picked, records = select(score, eligible, descriptors, batch - n_soft, float(min_separation))
    if n_soft:
        left = eligible.copy()
        left[picked] = False
        soft, soft_records = select(-np.asarray(stiffness, dtype=float), left, descriptors, n_soft,
                                    float(min_separation), picked, INSTABILITY_RULE)
        picked, records = np.concatenate([picked, soft]), records + soft_records
    return RoundPlan(raw, score, partition, reasons, picked, records, float(min_separation), calibration)
