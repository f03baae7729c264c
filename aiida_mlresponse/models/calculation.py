"""`TrainingCalculation` and `TrainingParser`: run the package's own training entry point on any computer, as a CalcJob.

The code is a Python interpreter that has `aiida-mlresponse` installed (`aiida-mlresponse setup`
creates `mlresponse-python@localhost`; on a cluster, point an InstalledCode at the Python of a GPU
node's environment). The dataset travels as its schema-checked `.npz` file (`DatasetData.export_npz`), the
model comes back as a checkpoint file (ml/checkpoint.py format) stored in a `ModelData` node, with the
training curves beside it. The model kinds it accepts, and the dataset each needs, are `ml.registry`'s.
With a `parent_model` (the last active-learning round's) the training warm-starts from it: its file travels
beside the dataset and the provenance graph links the new model to the one it started from.

Exit codes follow the package's table (`abinit/exit_codes.py`: 3xx files and parsing, 4xx run failures),
in the numbers that table leaves to other CalcJobs.
"""

from __future__ import annotations

import json
import pathlib
import tempfile

import numpy as np
from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob
from aiida.parsers import Parser

from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.data.model import ModelData
from aiida_mlresponse.ml.registry import check_parent, check_training

CONFIG_FILE = 'config.json'
DATASET_FILE = 'dataset.npz'
MODEL_FILE = 'model.pt'
PARENT_FILE = 'parent.pt'
LOG_FILE = 'training.log'


def validate_kind(value, _):
    if value is not None:
        try:
            check_training(value.value)
        except ValueError as exc:
            return str(exc)


def validate_inputs(inputs, _):
    kind = inputs.get('model_kind')
    dataset = inputs.get('dataset')
    if kind is None or dataset is None:
        return None
    hyperparameters = inputs['hyperparameters'].get_dict() if 'hyperparameters' in inputs else {}
    try:
        check_training(kind.value, dataset.kind, dataset.get_arraynames(), hyperparameters)
        if 'parent_model' in inputs:
            check_parent(kind.value, inputs['parent_model'].kind)
    except ValueError as exc:
        return str(exc)


class TrainingCalculation(CalcJob):
    """Train a committee (`model_kind`: radnet, pcamlp) on a `DatasetData`; output a `ModelData`."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('dataset', valid_type=DatasetData, help='The labelled configurations to train on.')
        spec.input('model_kind', valid_type=orm.Str, validator=validate_kind, help='Model family (`ml.registry`): radnet or pcamlp.')
        spec.input('hyperparameters', valid_type=orm.Dict, required=False,
                   help='Overrides of the family defaults (committee size, epochs, target, ...).')
        spec.input('parent_model', valid_type=ModelData, required=False,
                   help='A model of the kind this training writes (the last active-learning round\'s): the networks '
                        'start from its weights where their shapes match, with the family\'s warm-start schedule.')
        spec.inputs.validator = validate_inputs
        spec.inputs['metadata']['options']['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        spec.inputs['metadata']['options']['parser_name'].default = 'mlresponse.train'
        spec.inputs['metadata']['options']['withmpi'].default = False
        spec.output('model', valid_type=ModelData, help='The trained committee (weights-only checkpoint).')
        spec.output('training_curves', valid_type=orm.ArrayData, help='Per-epoch training/validation loss of each member.')
        spec.output('output_parameters', valid_type=orm.Dict, help='Best validation losses, epochs, wall time.')
        spec.exit_code(350, 'ERROR_NO_MODEL_FILE', message='The training produced no model file; see {log}.')
        spec.exit_code(351, 'ERROR_INVALID_MODEL_FILE', message='The model file cannot be read: {error}')
        spec.exit_code(480, 'ERROR_TRAINING_FAILED', message='The training stopped with an error: {error}')

    def prepare_for_submission(self, folder):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.inputs.dataset.export_npz(pathlib.Path(tmp) / DATASET_FILE)
            folder.insert_path(str(path), DATASET_FILE)
        config = {
            'kind': self.inputs.model_kind.value,
            'hyperparameters': self.inputs.hyperparameters.get_dict() if 'hyperparameters' in self.inputs else {},
        }
        calcinfo = datastructures.CalcInfo()
        if 'parent_model' in self.inputs:
            parent = self.inputs.parent_model
            config['parent_model'] = PARENT_FILE
            calcinfo.local_copy_list = [(parent.uuid, parent.filename, PARENT_FILE)]
        with folder.open(CONFIG_FILE, 'w') as handle:
            json.dump(config, handle, indent=2)

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = ['-m', 'aiida_mlresponse.ml.train_entry', CONFIG_FILE, DATASET_FILE, MODEL_FILE]
        codeinfo.stdout_name = LOG_FILE
        codeinfo.join_files = True  # tracebacks land in the log the parser reads

        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [MODEL_FILE, LOG_FILE]
        return calcinfo


class TrainingParser(Parser):
    """Store the checkpoint as `ModelData`, its curves as ArrayData, the summary as Dict."""

    def parse(self, **kwargs):
        retrieved = self.retrieved
        names = retrieved.base.repository.list_object_names()
        log = retrieved.base.repository.get_object_content(LOG_FILE) if LOG_FILE in names else ''
        if 'Traceback (most recent call last)' in log:
            return self.exit_codes.ERROR_TRAINING_FAILED.format(error=log.strip().splitlines()[-1])
        if MODEL_FILE not in names:
            return self.exit_codes.ERROR_NO_MODEL_FILE.format(log=LOG_FILE)
        from aiida_mlresponse.ml import checkpoint  # torch, only when a result is parsed

        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / MODEL_FILE
            path.write_bytes(retrieved.base.repository.get_object_content(MODEL_FILE, mode='rb'))
            try:
                payload = checkpoint.read(path)
                model = ModelData.from_checkpoint(path)
            except Exception as exc:  # a truncated or foreign file: say so, keep the retrieved folder
                return self.exit_codes.ERROR_INVALID_MODEL_FILE.format(error=str(exc))
        curves = orm.ArrayData()
        summary = {'kind': payload['kind'], 'members': {}}
        for member, curve in payload.get('curves', {}).items():
            for key, values in curve.items():
                curves.set_array(f'{member}__{key}', np.asarray(values))
            validation_key = next((k for k in ('validation_loss', 'val_loss') if k in curve), None)
            if validation_key and len(curve[validation_key]):
                validation = np.asarray(curve[validation_key])
                summary['members'][member] = {'best_validation_loss': float(validation.min()),
                                              'best_epoch': int(validation.argmin()), 'epochs': int(len(validation))}
        summary['log_tail'] = log.strip().splitlines()[-5:]
        self.out('model', model)
        self.out('training_curves', curves)
        self.out('output_parameters', orm.Dict(summary))
