"""Committee predictions of configurations for active learning, by model family, keyed by dataset column.

`predict_columns(kind, module, metadata, configurations)` returns {column: (mean, spread)} where the
column is the dataset column (`data.schema`) the model predicts, so scores, scales and test errors
compare like with like. Configurations are the arrays `LabelsWorkChain` takes:
`positions` (N, atoms, 3) Å for a radnet committee (one cell: the model's), `deformations` (N, 6)
for a PCA-MLP committee.
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
        out = predict_response(module, metadata, positions, np.asarray(metadata['cell_bohr']),
                               metadata['atomic_numbers'], with_born_charges)
        column = 'polarization' if metadata['target'] == 'polarization' else 'dielectric_tensor'
        result = {column: (out[column], out[f'{column}_spread'])}
        if 'born_charges' in out:
            result['born_charges'] = (out['born_charges'], np.zeros_like(out['born_charges']))
        return result
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
