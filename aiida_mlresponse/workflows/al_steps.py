"""The recorded steps of an active-learning round, each a calcfunction so every decision is a node.

- `score_pool`: committee predictions on the candidate pool, relative (or calibrated) scores, trust
  partition, physics cut, ranked diverse selection; outputs the picks (configurations for
  `LabelsWorkChain`), their predictions (for next round's calibration), the per-candidate scores and
  a `decisions` Dict that says why each pick was made and why each reject was refused.
- `evaluate_models`: test MAE and max per column on a held-out dataset.
- `record_round`: one row of the campaign table (decisions, test errors and times together).
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_mlresponse.ml.scoring import errors_against_labels, predict_models
from aiida_mlresponse.physics.strain import REFERENCE_DEFORMATION
from aiida_mlresponse.sampling import acquisition as acq

PARTITION_CODES = {acq.LEARNED: 0, acq.CANDIDATE: 1, acq.UNTRUSTED: 2, acq.REJECTED: 3, 'labelled': 4}
DEFORMATION_SCALE = np.array([0.05, 0.05, 0.05, 3.0, 3.0, 3.0])  # the paper's σ of λ and θ (deg)
CONFIGURATION_KEYS = {'response': 'positions', 'mg_strain': 'deformations'}
#: at most this many rejects are listed one by one in `decisions` (all are counted)
LISTED_REJECTS = 200


def _configurations(pool: orm.ArrayData) -> dict:
    return {name: pool.get_array(name) for name in pool.get_arraynames() if name != 'configuration_index'}


def _load(models: dict) -> list:
    """(kind, module, metadata) of each ModelData, read once per step."""
    loaded = []
    for model in models.values():
        module, payload = model.load()
        loaded.append((model.kind, module, payload['metadata']))
    return loaded


def _scales(dataset, predictions: dict) -> dict:
    return {column: acq.label_scale(dataset.get_array(column)) for column in predictions if column in dataset.get_arraynames()}


def _descriptors(kind: str, configurations: dict, reference_positions) -> np.ndarray:
    if kind == 'response':
        return acq.displacement_descriptor(configurations['positions'], reference_positions)
    return (configurations['deformations'] - REFERENCE_DEFORMATION) / DEFORMATION_SCALE


def relative_stiffness(models: list, deformations) -> np.ndarray:
    """Per cell, the committee-mean F's lowest strain-Hessian eigenvalue over the reference cell's: near 0 or
    below, the cell is close to an elastic instability (`physics.stress.strain_hessian_min_eigenvalue`)."""
    import copy

    from aiida_mlresponse.physics.stress import strain_hessian_min_eigenvalue

    module = copy.deepcopy(next(module for kind, module, _ in models if kind == 'pcamlp')).double()
    values = strain_hessian_min_eigenvalue(module.free_energy, np.concatenate([REFERENCE_DEFORMATION[None], deformations]))
    return values[1:] / abs(values[0])


def _calibration(previous: orm.ArrayData, dataset, scales: dict, quantile: float):
    """Fit spread -> error on last round's picks now that their labels are in the dataset."""
    index = dataset.get_array('configuration_index')
    picked = previous.get_array('configuration_index')
    rows = [int(np.flatnonzero(index == i)[0]) for i in picked if i in index]
    kept = [k for k, i in enumerate(picked) if i in index]
    if len(rows) < 2:
        return None
    predictions = {name[len('mean_'):]: (previous.get_array(name)[kept], None)
                   for name in previous.get_arraynames() if name.startswith('mean_')}
    labels = {column: dataset.get_array(column)[rows] for column in predictions}
    errors = errors_against_labels(predictions, labels, scales)['relative_per_row']
    return acq.calibrate(previous.get_array('score')[kept], errors, quantile)


@calcfunction
def score_pool(pool: orm.ArrayData, dataset, settings: orm.Dict, **inputs):
    """Score, cut and select one round's picks from `pool` (see the module docstring).

    `inputs`: `model_<target>` ModelData nodes, and optionally `previous` (last round's
    `picked_predictions`, for the calibrated mode). `settings`: kind, lo, hi, mode, quantile, batch,
    min_separation (None: half the median nearest-neighbour distance of the eligible candidates),
    min_distance (Å), asr_tolerance (e), reference_positions (Å, response), instability_share (mg_strain: the
    share of the batch picked by the softest predicted strain mode, `acquisition.plan_round`).
    """
    options = settings.get_dict()
    kind = options['kind']
    models = _load({key: node for key, node in inputs.items() if key.startswith('model_')})
    configurations = _configurations(pool)
    predictions = predict_models(models, configurations)
    scales = _scales(dataset, predictions)
    spreads = {c: spread for c, (_, spread) in predictions.items()}
    calibration = None
    if options.get('mode', 'relative') == 'calibrated' and 'previous' in inputs:
        calibration = _calibration(inputs['previous'], dataset, scales, float(options.get('quantile', 0.9)))
    pool_index = pool.get_array('configuration_index')
    reference_positions = np.asarray(options.get('reference_positions') or [])

    # Physics cut, before any ABINIT run: structure rules for every candidate, predicted ε∞ definiteness,
    # and (costly, so on the best-ranked candidates only) the acoustic sum rule of the predicted Z*.
    shortlist_check = None
    if kind == 'response':
        cells = np.repeat(np.asarray(options['reference_cell'])[None], len(pool_index), 0)
        reasons = acq.physics_rejections(configurations['positions'], cells, predictions.get('dielectric_tensor', (None,))[0],
                                         min_distance=float(options.get('min_distance', 0.5)))
        p_models = [loaded for loaded in models if loaded[2].get('target') == 'polarization']
        if p_models:
            def shortlist_check(rows):
                z = predict_models(p_models, {'positions': configurations['positions'][rows]}, with_born_charges=True)['born_charges'][0]
                return acq.physics_rejections(born_charges=z, asr_tolerance=float(options.get('asr_tolerance', 0.1)))
    else:
        from aiida_mlresponse.abinit.inputs import AbinitInputError
        from aiida_mlresponse.abinit.mg import validate_grid
        from aiida_mlresponse.physics.strain import deformation_to_cell

        cells = deformation_to_cell(configurations['deformations'])
        reasons = acq.physics_rejections(cells=cells)
        if options.get('ngfft'):  # the protocol's FFT grid is fixed (the fields share it): a cell it cannot hold is no label
            for row, cell in enumerate(cells):
                try:
                    validate_grid(options['ngfft'], float(options['ecut']), cell)  # the check the CalcJob makes
                except AbinitInputError as exc:
                    reasons[row].append(f'the protocol\'s FFT grid cannot hold this cell: {exc}')
    share = float(options.get('instability_share') or 0.0)
    stiffness = relative_stiffness(models, configurations['deformations']) if kind != 'response' and share else None
    plan = acq.plan_round(spreads, scales, float(options['lo']), float(options['hi']), int(options['batch']),
                          _descriptors(kind, configurations, reference_positions),
                          np.isin(pool_index, dataset.get_array('configuration_index')), reasons, calibration,
                          options.get('min_separation'), shortlist_check, stiffness, share)
    raw, score, partition, picked, records = plan.relative_spread, plan.score, plan.partition, plan.picked, plan.records
    reasons, separation = plan.reasons, plan.min_separation
    rejected = partition == acq.REJECTED

    picks = orm.ArrayData()
    for name, value in configurations.items():
        picks.set_array(name, value[picked])
    picks.set_array('configuration_index', pool_index[picked])
    picked_predictions = orm.ArrayData()
    picked_predictions.set_array('configuration_index', pool_index[picked])
    picked_predictions.set_array('score', raw[picked])
    for column, (mean, spread) in predictions.items():
        picked_predictions.set_array(f'mean_{column}', mean[picked])
        picked_predictions.set_array(f'spread_{column}', spread[picked])
    scores = orm.ArrayData()
    scores.set_array('configuration_index', pool_index)
    scores.set_array('relative_spread', raw)
    scores.set_array('score', score)
    scores.set_array('partition', np.array([PARTITION_CODES[p] for p in partition]))
    if stiffness is not None:
        scores.set_array('relative_stiffness', stiffness)

    counts = {name: int(np.sum(partition == name)) for name in PARTITION_CODES}
    unlabelled = len(score) - counts['labelled']
    reject_rows = np.flatnonzero(rejected)
    decisions = {
        'counts': counts, 'pool': int(len(score)),
        'fraction_below_lo': counts[acq.LEARNED] / unlabelled if unlabelled else 1.0,
        'trust': {'lo': float(options['lo']), 'hi': float(options['hi']), 'mode': options.get('mode', 'relative'),
                  'unit': 'expected relative error' if calibration else 'spread / label scale'},
        'calibration': calibration.as_dict() if calibration else None,
        'scales': scales, 'min_separation': float(separation),
        'picks': [{'configuration_index': int(pool_index[r['row']]), 'rank': r['rank'], 'score': r['score'],
                   'relative_spread': float(raw[r['row']]), 'rule': r['rule'],
                   **({'relative_stiffness': float(stiffness[r['row']])} if stiffness is not None else {})}
                  for r in records if r['decision'] == 'picked'],
        'skipped': [{'configuration_index': int(pool_index[r['row']]), 'rank': r['rank'], 'score': r['score'],
                     'rule': r['decision'], 'near': int(pool_index[r['near_pick']]), 'distance': r['distance']}
                    for r in records if r['decision'] != 'picked'],
        'rejected': [{'configuration_index': int(pool_index[row]), 'reasons': reasons[row]} for row in reject_rows[:LISTED_REJECTS]],
        'reference_prediction': _reference_prediction(kind, models, reference_positions),
    }
    return {'picks': picks, 'picked_predictions': picked_predictions, 'scores': scores, 'decisions': orm.Dict(decisions)}


def _reference_prediction(kind: str, models: list, reference_positions) -> dict:
    """The committee's mean and spread at the reference configuration: the property the convergence rule watches."""
    configurations = ({'positions': reference_positions[None]} if kind == 'response'
                      else {'deformations': REFERENCE_DEFORMATION[None]})
    return {column: {'mean': np.asarray(mean[0]).tolist(), 'spread': np.asarray(spread[0]).tolist()}
            for column, (mean, spread) in predict_models(models, configurations).items()}


@calcfunction
def evaluate_models(test_dataset, **models) -> orm.Dict:
    """MAE and max |error| per predicted column on a held-out dataset."""
    kind = test_dataset.kind
    column = 'positions' if kind == 'response' else 'deformation'
    key = CONFIGURATION_KEYS[kind]
    predictions = predict_models(_load(models), {key: test_dataset.get_array(column)})
    labels = {c: test_dataset.get_array(c) for c in predictions if c in test_dataset.get_arraynames()}
    scales = {c: 1.0 for c in labels}
    return orm.Dict(errors_against_labels(predictions, labels, scales)['columns'] | {'rows': int(test_dataset.size)})


@calcfunction
def record_round(decisions: orm.Dict, times: orm.Dict, **extra) -> orm.Dict:
    """One row of the campaign table: counts, picks, test errors (`extra['test_errors']`) and times."""
    d = decisions.get_dict()
    row = {'counts': d['counts'], 'fraction_below_lo': d['fraction_below_lo'], 'picked': len(d['picks']),
           'rejected': d['counts'][acq.REJECTED], 'reference_prediction': d['reference_prediction'], **times.get_dict()}
    if 'test_errors' in extra:
        row['test_errors'] = extra['test_errors'].get_dict()
    return orm.Dict(row)
