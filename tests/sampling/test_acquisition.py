"""Acquisition: relative scores, trust levels, calibration, physics cut and diverse selection."""

import numpy as np
import pytest

from aiida_mlresponse.sampling import acquisition as acq


def test_relative_spread_compares_quantities_by_their_own_size():
    spreads = {'P': np.array([[1e-4, 0, 0], [1e-6, 0, 0]]), 'eps': np.array([[1e-4] * 9, [1e-2] * 9])}
    scales = {'P': 1e-3, 'eps': 1.0}
    # 1e-4 in P (scale 1e-3) is a relative 0.1; 1e-4 in ε∞ (scale 1) only 1e-4
    np.testing.assert_allclose(acq.relative_spread(spreads, scales), [0.1, 1e-2])
    # the variation over rows counts, not the offset between components (ε∞'s diagonal against its off-diagonal)
    assert acq.label_scale(np.array([[4.0, 0.0], [4.0, 0.0]])) == 1e-12
    assert acq.label_scale(np.array([[4.0, 0.0], [6.0, 0.0]])) == pytest.approx(np.sqrt(0.5))


def test_trust_partition_and_bad_levels():
    parts = acq.trust_partition(np.array([0.01, 0.05, 0.2, 0.5]), lo=0.05, hi=0.5)
    assert parts.tolist() == ['learned', 'candidate', 'candidate', 'untrusted']
    with pytest.raises(ValueError, match='lo < hi'):
        acq.trust_partition(np.zeros(2), lo=0.3, hi=0.1)


def test_calibration_factor_covers_the_stated_fraction():
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.01, 0.1, 2000)
    error = np.abs(rng.normal(0, 3 * spread))  # the committee is overconfident by 3x
    calibration = acq.calibrate(spread, error, quantile=0.9)
    assert np.mean(error <= calibration.apply(spread)) == pytest.approx(0.9, abs=0.01)
    assert 3 * 1.5 < calibration.factor < 3 * 1.8  # the 90 % point of |N(0, 1)| is 1.645
    assert calibration.as_dict()['rows'] == 2000


def test_physics_cut_names_each_broken_rule():
    cells = np.repeat(np.eye(3)[None] * 4.0, 4, 0)
    cells[3] = -cells[3]
    positions = np.array([[[0, 0, 0], [2, 2, 2]]] * 4, dtype=float)
    positions[1, 1] = [0.2, 0, 0]  # 0.2 apart
    positions[2, 1] = [3.9, 0, 0]  # 0.1 apart through the periodic image
    eps = np.repeat(np.eye(3)[None] * 5.0, 4, 0)
    eps[0, 2, 2] = -0.1
    z = np.zeros((4, 2, 3, 3))
    z[3, 0] = np.eye(3) * 2.0  # sum over atoms 2 e
    reasons = acq.physics_rejections(positions, cells, eps, z, min_distance=0.5, asr_tolerance=0.1)
    assert 'positive definite' in reasons[0][0] and len(reasons[0]) == 1
    assert reasons[1] == ['atoms 0.200 apart < 0.5']
    assert reasons[2] == ['atoms 0.100 apart < 0.5']
    assert any('volume' in r for r in reasons[3]) and any('sum rule' in r for r in reasons[3])


def test_minimum_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    cells = np.array([np.eye(3) * 3 + rng.normal(0, 0.2, (3, 3)) for _ in range(5)])
    positions = rng.random((5, 3, 3)) @ cells
    brute = []
    for pos, cell in zip(positions, cells):
        best = np.inf
        for i in range(3):
            for j in range(3):
                for shift in np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).T.reshape(-1, 3):
                    if i == j and not shift.any():
                        continue
                    best = min(best, np.linalg.norm(pos[i] - pos[j] + shift @ cell))
        brute.append(best)
    np.testing.assert_allclose(acq.minimum_distances(positions, cells), brute)


def test_selection_is_ranked_diverse_and_recorded():
    descriptors = np.array([[0.0], [0.01], [1.0], [2.0], [3.0]])
    scores = np.array([0.9, 0.8, 0.5, 0.7, 0.1])
    eligible = np.array([True, True, True, True, False])
    picked, records = acq.select(scores, eligible, descriptors, batch=3, min_separation=0.5)
    assert picked.tolist() == [0, 3, 2]  # row 1 is a near copy of row 0; row 4 is not eligible
    skipped = [r for r in records if r['decision'] != 'picked']
    assert skipped == [{'row': 1, 'rank': 1, 'score': 0.8, 'rule': acq.SPREAD_RULE, 'decision': 'skipped: too close',
                        'near_pick': 0, 'distance': 0.01}]
    assert acq.select(scores, eligible, descriptors, batch=2)[0].tolist() == [0, 1]  # no diversity rule


def test_displacement_descriptor_ignores_rigid_translation():
    reference = np.array([[0.0, 0, 0], [1, 1, 1]])
    moved = reference[None] + np.array([0.3, -0.2, 0.1])
    np.testing.assert_allclose(acq.displacement_descriptor(moved, reference), 0, atol=1e-15)
    assert acq.median_neighbour_distance(np.array([[0.0], [1.0], [3.0]])) == 1.0


def test_plan_round_partitions_cuts_and_picks():
    spreads = {'eps': np.array([[0.5], [0.01], [0.3], [9.0], [0.4], [0.35]])}
    reasons = [[], [], [], [], ['atoms 0.1 apart < 0.5'], []]
    labelled = np.array([False, False, False, False, False, True])
    descriptors = np.arange(6.0)[:, None]
    checked = []

    def shortlist_check(rows):
        checked.extend(rows)
        return [['Z* acoustic sum rule broken'] if row == 2 else [] for row in rows]

    plan = acq.plan_round(spreads, {'eps': 1.0}, lo=0.05, hi=5.0, batch=2, descriptors=descriptors, labelled=labelled,
                          reasons=reasons, min_separation=0.0, shortlist_check=shortlist_check)
    assert plan.partition.tolist() == ['candidate', 'learned', 'rejected', 'untrusted', 'rejected', 'labelled']
    assert checked == [0, 2]  # only the ranked candidates without a reason yet
    assert plan.picked.tolist() == [0]
    calibrated = acq.plan_round(spreads, {'eps': 1.0}, 0.05, 5.0, 2, descriptors, labelled, reasons,
                                calibration=acq.Calibration(20.0, 0.9, 10), min_separation=0.0)
    assert calibrated.partition[0] == 'untrusted' and calibrated.score[0] == pytest.approx(10.0)


def test_plan_round_gives_a_share_of_the_batch_to_the_softest_candidates():
    # six candidates: spread ranks 0 > 1 > 2 ...; the predicted strain stiffness is lowest at 5, then 4
    spreads = {'F': np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4]])}
    stiffness = np.array([1.0, 0.9, 0.8, 0.7, 0.1, -0.2])
    descriptors = np.arange(6.0)[:, None]
    labelled, reasons = np.zeros(6, bool), [[] for _ in range(6)]
    plan = acq.plan_round(spreads, {'F': 1.0}, 0.05, 5.0, 4, descriptors, labelled, reasons, min_separation=0.0,
                          stiffness=stiffness, instability_share=0.5)
    assert plan.picked.tolist() == [0, 1, 5, 4]
    rules = {r['row']: r['rule'] for r in plan.records if r['decision'] == 'picked'}
    assert rules == {0: acq.SPREAD_RULE, 1: acq.SPREAD_RULE, 5: acq.INSTABILITY_RULE, 4: acq.INSTABILITY_RULE}
    # the soft picks keep their distance from the spread picks too
    close = acq.plan_round(spreads, {'F': 1.0}, 0.05, 5.0, 2, np.array([[0.0], [5.0], [9.0], [7.0], [6.0], [0.1]]),
                           labelled, reasons, min_separation=0.5, stiffness=stiffness, instability_share=0.5)
    assert close.picked.tolist() == [0, 4]  # 5 (softest) sits 0.1 from pick 0
    assert acq.plan_round(spreads, {'F': 1.0}, 0.05, 5.0, 4, descriptors, labelled, reasons, min_separation=0.0,
                          stiffness=None, instability_share=0.5).picked.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match='instability_share'):
        acq.plan_round(spreads, {'F': 1.0}, 0.05, 5.0, 4, descriptors, labelled, reasons, instability_share=1.5)
