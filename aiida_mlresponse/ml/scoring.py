"""Committee predictions of configurations for active learning, by model family, keyed by dataset column.

`predict_columns(kind, module, metadata, configurations)` returns {column: (mean, spread)} where the
column is the dataset column (`data.schema`) the model predicts, so scores, scales and test errors
compare like with like. Configurations are the arrays `LabelsWorkChain` takes:
`positions` (N, atoms, 3) Å for a radnet committee (one cell: the model's), `deformations` (N, 6)
for a PCA-MLP committee. `predict_models` does the same for several loaded models at once (a round's P and ε∞
committees share their density cubes).
"""

from __future__ import annotations

import numpy as np

from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

#: PCA-MLP head -> the mg_strain column it predicts (the heads active learning scores and tests)
PCAMLP_COLUMNS = {'F': 'free_energy', 'R': 'R'}


def predict_columns(kind: str, module, metadata: dict, configurations: dict, with_born_charges: bool = False) -> dict:
    """{column: (mean, spread)} of a loaded committee (`ModelData.load()`) on `configurations`."""
    if kind == 'radnet_committee':
        from aiida_mlresponse.ml.radnet.predict import predict_response

        positions = np.asarray(configurations['positions'], dtype=float) * ANGSTROM_TO_BOHR
        return _radnet_columns(predict_response(module, metadata, positions, np.asarray(metadata['cell_bohr']),
                                                metadata['atomic_numbers'], with_born_charges))
    if kind == 'pcamlp':
        out = module.predict(np.asarray(configurations['deformations'], dtype=float), fields=False)
        result = {}
        for head, column in PCAMLP_COLUMNS.items():
            mean, spread = out[head], out[f'{head}_std']
            if column == 'free_energy':  # a scalar head comes out (N, 1)
                mean, spread = mean[:, 0], spread[:, 0]
            result[column] = (mean, spread)
        return result
    raise ValueError(f'no committee predictions for model kind `{kind}`.')


def predict_models(models: list, configurations: dict, with_born_charges: bool = False) -> dict:
    """`predict_columns` of every loaded model, models [(kind, module, metadata)], merged into one dict (Z* from the
    polarization committees with `with_born_charges`). Radnet committees of one cell scored without Z* share one
    pass of density cubes (`radnet.predict.predict_responses`): for a pool of 16-atom cells the cubes are most of
    the cost, so a P and an ε∞ committee cost about one."""
    predictions, shared = {}, {}
    for kind, module, metadata in models:
        born = with_born_charges and metadata.get('target') == 'polarization'
        if kind == 'radnet_committee' and not born:
            key = (repr(metadata['cell_bohr']), repr(list(metadata['atomic_numbers'])))
            shared.setdefault(key, []).append((module, metadata))
        else:
            predictions.update(predict_columns(kind, module, metadata, configurations, born))
    if shared:
        from aiida_mlresponse.ml.radnet.predict import predict_responses

        positions = np.asarray(configurations['positions'], dtype=float) * ANGSTROM_TO_BOHR
        for group in shared.values():
            metadata = group[0][1]
            for out in predict_responses(group, positions, np.asarray(metadata['cell_bohr']),
                                         metadata['atomic_numbers']):
                predictions.update(_radnet_columns(out))
    return predictions


def _radnet_columns(out: dict) -> dict:
    """{column: (mean, spread)} of a `radnet.predict.predict_response` result."""
    column = 'polarization' if 'polarization' in out else 'dielectric_tensor'
    result = {column: (out[column], out[f'{column}_spread'])}
    if 'born_charges' in out:
        result['born_charges'] = (out['born_charges'], np.zeros_like(out['born_charges']))
    return result


def errors_against_labels(predictions: dict, labels: dict, scales: dict) -> dict:
    """Per column: MAE and max |error| (over rows and components), and per row the largest error / scale."""
    summary, per_row = {}, []
    for column, (mean, _) in predictions.items():
        if column not in labels:
            continue
        error = np.abs(np.asarray(mean) - np.asarray(labels[column])).reshape(len(mean), -1)
        summary[column] = {'mae': float(error.mean()), 'max': float(error.max())}
        per_row.append(error.max(1) / scales[column])
    return {'columns': summary, 'relative_per_row': np.max(np.stack(per_row, 1), 1) if per_row else np.zeros(0)}
