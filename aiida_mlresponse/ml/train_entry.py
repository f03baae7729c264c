"""The package's one training entry point, for every model family.

    python -m aiida_mlresponse.ml.train_entry config.json dataset.npz model.pt

`config.json`: {"kind": <family>, "hyperparameters": {...}, "dataset_attributes": {...}}; the
dataset file holds the arrays of a `DatasetData` node. The model is written in the format of
`ml/checkpoint.py`. Progress goes to stdout, one line per epoch, which the `TrainingCalculation`
keeps as its log. No aiida import here: the same command runs on a GPU node without a profile.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

# kind -> (dataset kind it trains on, arrays it needs, the targets it can learn)
TRAINERS = {
    'radnet': ('response', ('positions', 'cells'), {'polarization': 'polarization', 'dielectric': 'dielectric_tensor'}),
    'pcamlp': ('mg_strain', ('deformation', 'free_energy', 'band_energy', 'entropy_energy', 'R'), {}),
}


def check_hyperparameters(kind: str, dataset_kind: str, arraynames, hyperparameters: dict) -> None:
    """Refuse, before anything runs, a family/dataset mismatch or a target the dataset does not hold."""
    if kind not in TRAINERS:
        raise ValueError(f'unknown model kind `{kind}`; known kinds: {", ".join(sorted(TRAINERS))}.')
    wanted_kind, needed, targets = TRAINERS[kind]
    if dataset_kind != wanted_kind:
        raise ValueError(f'a `{kind}` model trains on a `{wanted_kind}` dataset, got a `{dataset_kind}` dataset.')
    missing = [name for name in needed if name not in arraynames]
    if missing:
        raise ValueError(f'the dataset lacks the arrays {missing} that a `{kind}` model needs.')
    if targets:
        target = hyperparameters.get('target', 'polarization')
        if target not in targets:
            raise ValueError(f'unknown target `{target}` for `{kind}`; choose one of {sorted(targets)}.')
        if targets[target] not in arraynames:
            raise ValueError(f'the dataset has no `{targets[target]}` array for target `{target}`.')


def train_radnet(arrays: dict, attributes: dict, hyperparameters: dict, log, model_path):
    """Fit a radnet committee on a response dataset (positions and cells in Å, P in e/Bohr²); write it."""
    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.committee import fit_committee
    from aiida_mlresponse.ml.datasets import tensor_to_voigt

    hyperparameters = dict(hyperparameters)
    target = hyperparameters.pop('target', 'polarization')
    seed = int(hyperparameters.pop('seed', 0))
    cells = np.asarray(arrays['cells'], dtype=float)
    if not np.allclose(cells, cells[0], atol=1e-10):
        raise ValueError('a radnet committee is trained on configurations of one cell; this dataset has several.')
    cell = cells[0] * ANGSTROM_TO_BOHR
    positions = np.asarray(arrays['positions'], dtype=float) * ANGSTROM_TO_BOHR
    numbers = np.asarray(attributes['atomic_numbers'], dtype=int)
    targets = arrays['polarization'] if target == 'polarization' else tensor_to_voigt(arrays['dielectric_tensor'])
    committee, results = fit_committee(positions, cell, numbers, np.asarray(targets, dtype=float), target,
                                       hyperparameters=hyperparameters, log=log, seed=seed)
    metadata = {
        'target': target,
        'units': {'positions': 'bohr', 'polarization': 'e/bohr^2', 'dielectric': 'dimensionless (Voigt xx yy zz yz xz xy)'}[
            'polarization' if target == 'polarization' else 'dielectric'],
        'cell_bohr': cell.tolist(), 'atomic_numbers': numbers.tolist(), 'n_train': int(len(positions)),
    }
    curves = {f'member_{k}': result.curve_arrays() for k, result in enumerate(results)}
    checkpoint.save(model_path, committee, metadata=metadata, curves=curves)


def train_pcamlp(arrays: dict, attributes: dict, hyperparameters: dict, log, model_path):
    """Fit a PCA-MLP committee on an Mg strain dataset (deformations, energies, positions, fields, and the
    stress (Ha/Bohr³), which the F head fits through its derivative); write it."""
    from aiida_mlresponse.ml.pcamlp import MG_ARRAYS, train_and_save

    named = {'D': arrays['deformation']}
    named.update({name: arrays[key] for key, name in MG_ARRAYS.items() if key in arrays})
    if 'stress' in arrays:
        named['stress'] = arrays['stress']
    train_and_save(named, model_path, settings=hyperparameters, log=log)


TRAIN_FUNCTIONS = {'radnet': train_radnet, 'pcamlp': train_pcamlp}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__)
        return 2
    config_path, data_path, model_path = map(pathlib.Path, argv)
    config = json.loads(config_path.read_text())
    kind, hyperparameters = config['kind'], config.get('hyperparameters', {})
    attributes = config.get('dataset_attributes', {})
    with np.load(data_path) as data:
        arrays = {name: data[name] for name in data.files}
    check_hyperparameters(kind, attributes.get('kind'), arrays.keys(), hyperparameters)

    def log(line):
        print(line, flush=True)

    start = time.perf_counter()
    log(f'training a `{kind}` model on {len(next(iter(arrays.values())))} configurations')
    TRAIN_FUNCTIONS[kind](arrays, attributes, hyperparameters, log, model_path)
    log(f'model written to {model_path} after {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
