"""The package's one training entry point, for every model family.

    python -m aiida_mlresponse.ml.train_entry config.json dataset.npz model.pt

`config.json`: {"kind": <model kind>, "hyperparameters": {...}, "parent_model": <optional model file to
warm-start from, relative to the config>}; the dataset file is the `.npz` of a
`DatasetData` node (`aiida_mlresponse.data.schema`, read with its schema check; `DatasetData.export_npz`
writes it). The trainer of each kind is in `ml.registry`; the model is written in the format of
`ml/checkpoint.py`. Progress goes to stdout, one line per epoch, which the `TrainingCalculation` keeps as its
log. No aiida import here: the same command runs on a GPU node without a profile.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

from aiida_mlresponse.data.schema import read_npz
from aiida_mlresponse.ml import checkpoint
from aiida_mlresponse.ml.registry import check_parent, check_training, trainer


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__)
        return 2
    config_path, data_path, model_path = map(pathlib.Path, argv)
    config = json.loads(config_path.read_text())
    kind, hyperparameters = config['kind'], config.get('hyperparameters', {})
    dataset_kind, arrays, attributes = read_npz(data_path)
    check_training(kind, dataset_kind, arrays.keys(), hyperparameters)
    parent = config_path.parent / config['parent_model'] if config.get('parent_model') else None
    if parent is not None:
        check_parent(kind, checkpoint.read(parent)['kind'])

    def log(line):
        print(line, flush=True)

    start = time.perf_counter()
    log(f'training a `{kind}` model on {len(next(iter(arrays.values())))} configurations')
    if parent is not None:
        log(f'warm start from {parent.name}')
    trainer(kind)(arrays, attributes, hyperparameters, model_path, log, **({'parent': parent} if parent else {}))
    log(f'model written to {model_path} after {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
