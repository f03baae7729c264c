"""`ActiveLearningWorkChain`: grow a committee's training set where the committee is uncertain (METHODS part C).

One work chain for both model families (radnet on `response` datasets, PCA-MLP on `mg_strain`).
A round: train the committee on every label so far (`TrainingCalculation`, one per target), score the
candidate pool and pick a batch (`al_steps.score_pool`: relative or calibrated trust levels, physics cut,
diversity), evaluate on the test set if one is given, label the picks with ABINIT (`LabelsWorkChain`,
extending the dataset node). Every decision is a calcfunction output; `verdi process report` tells the
story, `aiida-mlresponse campaign show PK` prints the round table and `workflows.provenance.why_labelled`
answers "why was this configuration labelled?".

Stop rules, checked after each round's training and scoring, so the final models have seen every label:
`budget` (DFT labels, the starting dataset's or the initial ones included), `max_rounds` (labelling rounds), `accurate_ratio`
(the fraction of the unlabelled pool below `lo`), `property_tolerance` (the committee mean at the
reference configuration changed by less than this, relative to the label scale, between two rounds),
and no candidate left between `lo` and `hi`. The output `stop_reason` says which fired.

Pool rows carry `configuration_index` (default: offset past the starting dataset's indices), the index
the labels keep in the dataset, so a pick can be traced back to the round and rule that chose it.
A pick whose ABINIT run fails is left out (the labelling work chain's `failed` output, named in the report) and
dropped from the pool (`drop_failed`), so no later round picks it again; more failures in a round than
`max_failed_fraction` stop the campaign with exit code 485.
"""

from __future__ import annotations

import time

import numpy as np
from aiida import orm
from aiida.engine import WorkChain, calcfunction, if_, while_
from aiida.plugins import CalculationFactory

from aiida_mlresponse.abinit.protocols import MG_PROTOCOLS, get_protocol_inputs
from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.ml.registry import get_kind
from aiida_mlresponse.workflows.al_steps import evaluate_models, record_round, score_pool
from aiida_mlresponse.workflows.labels import LabelsWorkChain
from aiida_mlresponse.workflows.launch import called_by_label, submit_once

TrainingCalculation = CalculationFactory('mlresponse.train')

DEFAULT_TRUST = {'lo': 0.05, 'hi': 5.0, 'mode': 'relative', 'quantile': 0.9}
RADNET_TARGETS = ('polarization', 'dielectric')
#: strain campaigns: share of each batch that goes to the candidates whose predicted softest strain mode is weakest
#: (labels gather near instabilities, where the seed's model was weakest); the rest by committee spread
INSTABILITY_SHARE = 0.25


@calcfunction
def index_pool(pool: orm.ArrayData, offset: orm.Int) -> orm.ArrayData:
    """The pool with `configuration_index` = offset + row (indices past those of the starting dataset)."""
    indexed = orm.ArrayData()
    for name in pool.get_arraynames():
        indexed.set_array(name, pool.get_array(name))
    rows = len(pool.get_array(pool.get_arraynames()[0]))
    indexed.set_array('configuration_index', np.arange(rows) + offset.value)
    return indexed


@calcfunction
def drop_failed(pool: orm.ArrayData, failed: orm.Dict) -> orm.ArrayData:
    """The pool without the configurations whose ABINIT run failed (a later round must not pick them again)."""
    index = pool.get_array('configuration_index')
    keep = ~np.isin(index, [int(i) for i in failed.get_dict()])
    kept = orm.ArrayData()
    for name in pool.get_arraynames():
        kept.set_array(name, pool.get_array(name)[keep])
    return kept


@calcfunction
def round_table(**rounds) -> orm.Dict:
    """The campaign table: one entry per round, in round order."""
    return orm.Dict({'rounds': [rounds[key].get_dict() for key in sorted(rounds)]})


def validate_inputs(inputs, _):
    kind = inputs['model_kind'].value
    try:
        training = get_kind(kind).training
    except KeyError as exc:
        return str(exc.args[0])
    if training is None:
        return f'model kind `{kind}` is not trainable.'
    if 'dataset' not in inputs and 'initial' not in inputs:
        return 'give a starting `dataset` or `initial` configurations to label.'
    if 'dataset' in inputs and inputs['dataset'].kind != training.dataset_kind:
        return f'a `{kind}` campaign needs a `{training.dataset_kind}` dataset, got `{inputs["dataset"].kind}`.'
    trust = {**DEFAULT_TRUST, **inputs['trust'].get_dict()} if 'trust' in inputs else DEFAULT_TRUST
    if not 0 <= trust['lo'] < trust['hi'] or trust['mode'] not in ('relative', 'calibrated'):
        return f'trust levels need 0 <= lo < hi and mode relative or calibrated, got {trust}.'
    share = inputs['selection'].get_dict().get('instability_share', 0.0) if 'selection' in inputs else 0.0
    if not 0.0 <= share <= 1.0:
        return f'`selection.instability_share` must lie in [0, 1], got {share}.'
    for name in ('batch_size', 'budget', 'max_rounds'):
        if name in inputs and inputs[name].value < 1:
            return f'`{name}` must be at least 1.'


class ActiveLearningWorkChain(WorkChain):
    """Train, score the pool, pick where the committee is uncertain, label with ABINIT; repeat until a stop rule."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(LabelsWorkChain, namespace='labelling',
                           exclude=('kind', 'configurations', 'dataset', 'min_success_fraction'))
        spec.input('model_kind', valid_type=orm.Str, help='Training model kind: radnet or pcamlp.')
        spec.input('targets', valid_type=orm.List, required=False,
                   help=f'radnet: the committees to train each round (default {list(RADNET_TARGETS)}).')
        spec.input('hyperparameters', valid_type=orm.Dict, required=False, help='Training hyperparameters (every target).')
        spec.input('training_code', valid_type=orm.AbstractCode, help='Python with aiida-mlresponse (mlresponse-python).')
        spec.input('warm_start', valid_type=orm.Bool, required=False,
                   help='From round 2 on, train from the last round\'s model (`parent_model`); default: the '
                        'family\'s (`ml.registry`: on for pcamlp, off for radnet, whose default members are closed-form).')
        spec.input('dataset', valid_type=DatasetData, required=False, help='Labels to start from.')
        spec.input('initial', valid_type=orm.ArrayData, required=False, help='Configurations to label first.')
        spec.input('pool', valid_type=orm.ArrayData, help='Candidate configurations (wider than the initial ones).')
        spec.input('test_dataset', valid_type=DatasetData, required=False, help='Held-out labels: test MAE/max per round.')
        spec.input('batch_size', valid_type=orm.Int, default=lambda: orm.Int(4), help='Picks per round at most.')
        spec.input('budget', valid_type=orm.Int, default=lambda: orm.Int(40),
                   help='DFT labels in all: the starting dataset\'s or the initial ones included.')
        spec.input('max_rounds', valid_type=orm.Int, default=lambda: orm.Int(5), help='Labelling rounds at most.')
        spec.input('trust', valid_type=orm.Dict, required=False, help=f'lo, hi, mode (relative|calibrated), quantile; default {DEFAULT_TRUST}.')
        spec.input('accurate_ratio', valid_type=orm.Float, default=lambda: orm.Float(0.95),
                   help='Stop when at least this fraction of the unlabelled pool is below lo.')
        spec.input('property_tolerance', valid_type=orm.Float, required=False,
                   help='Stop when the prediction at the reference moves less than this (relative to the label scale).')
        spec.input('selection', valid_type=orm.Dict, required=False,
                   help='min_separation (descriptor units), min_distance (Å), asr_tolerance (e), instability_share '
                        f'(strain: share of each batch picked closest to an instability; default {INSTABILITY_SHARE}).')
        spec.input('max_failed_fraction', valid_type=orm.Float, default=lambda: orm.Float(0.5),
                   help='Stop with an error when more of a round\'s labels fail than this.')
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.has_initial)(cls.label_initial, cls.inspect_labels),
            while_(cls.should_continue)(
                cls.train, cls.inspect_training, cls.score,
                if_(cls.should_label)(cls.label_picks, cls.inspect_labels),
            ),
            cls.finalize,
        )
        spec.output('dataset', valid_type=DatasetData, help='Every label of the campaign.')
        spec.output_namespace('models', valid_type=orm.Data, dynamic=True, help='The last round\'s committees, by target.')
        spec.output('rounds', valid_type=orm.Dict, help='The campaign table, one entry per round.')
        spec.output('stop_reason', valid_type=orm.Str)
        spec.exit_code(483, 'ERROR_INITIAL_LABELS_FAILED', message='The initial configurations could not be labelled: {message}')
        spec.exit_code(484, 'ERROR_TRAINING_FAILED', message='Training failed in round {round}: {message}')
        spec.exit_code(485, 'ERROR_TOO_MANY_FAILED_LABELS', message='Round {round}: {failed} of {total} labels failed.')

    # -- set-up

    def setup(self):
        kind = self.inputs.model_kind.value
        self.ctx.dataset_kind = get_kind(kind).training.dataset_kind
        self.ctx.targets = (list(self.inputs.targets.get_list()) if 'targets' in self.inputs else list(RADNET_TARGETS)) \
            if kind == 'radnet' else [kind]
        self.ctx.trust = {**DEFAULT_TRUST, **(self.inputs.trust.get_dict() if 'trust' in self.inputs else {})}
        self.ctx.round = 0
        self.ctx.labels_run = 0
        self.ctx.stop_reason = None
        self.ctx.records = {}
        self.ctx.previous_reference = None
        self.ctx.round_started = time.time()
        self.ctx.times = {}
        if 'dataset' in self.inputs:
            self.ctx.dataset = self.inputs.dataset
            self.ctx.labels_run = self.inputs.dataset.size  # the budget caps the labels of the final dataset
            self._index_pool(int(self.inputs.dataset.get_array('configuration_index').max()) + 1)
        self.report(f'{kind} campaign on a {self.ctx.dataset_kind} pool; targets {self.ctx.targets}; '
                    f'budget {self.inputs.budget.value} labels, at most {self.inputs.max_rounds.value} rounds')

    def _index_pool(self, offset):
        pool = self.inputs.pool
        self.ctx.pool = pool if 'configuration_index' in pool.get_arraynames() else index_pool(pool, orm.Int(offset))

    def has_initial(self):
        return 'initial' in self.inputs and 'dataset' not in self.inputs

    def _labelling(self, configurations, dataset=None):
        builder = LabelsWorkChain.get_builder()
        builder._update(self.exposed_inputs(LabelsWorkChain, namespace='labelling'))
        builder._update(kind=orm.Str(self.ctx.dataset_kind), configurations=configurations,
                        min_success_fraction=orm.Float(1.0 - self.inputs.max_failed_fraction.value))
        if dataset is not None:
            builder.dataset = dataset
        if 'reference_arrays' in self.ctx:
            builder.reference_arrays = self.ctx.reference_arrays
        return builder

    def label_initial(self):
        node = submit_once(self, self._labelling(self.inputs.initial), 'labels_initial')  # once, even across a daemon kill
        self.ctx.labels_run += len(self.inputs.initial.get_array(self.inputs.initial.get_arraynames()[0]))
        self.report(f'labelling the initial configurations: {node.process_label}<{node.pk}>')
        return self.to_context(labels=node)

    def inspect_labels(self):
        node = self.ctx.labels
        self.ctx.times['dft_seconds'] = (node.mtime - node.ctime).total_seconds()
        failed = node.outputs.failed if 'failed' in node.outputs else None
        for index, failure in (failed.get_dict() if failed is not None else {}).items():
            self.report(f'configuration {index} left out: exit {failure["exit_status"]} {failure["message"]}')
        if not node.is_finished_ok:
            if self.ctx.round == 0:
                return self.exit_codes.ERROR_INITIAL_LABELS_FAILED.format(message=f'{node.process_label}<{node.pk}> exit {node.exit_status}')
            return self.exit_codes.ERROR_TOO_MANY_FAILED_LABELS.format(
                round=self.ctx.round, failed=len(failed.get_dict()) if failed is not None else '?',
                total=len(self.ctx.picks.get_array('configuration_index')))
        if self.ctx.round > 0 and failed.get_dict():
            self.ctx.pool = drop_failed(self.ctx.pool, failed)
        self.ctx.dataset = node.outputs.dataset
        if 'reference_arrays' in node.outputs:
            self.ctx.reference_arrays = node.outputs.reference_arrays
        if self.ctx.round == 0:
            self._index_pool(int(self.ctx.dataset.get_array('configuration_index').max()) + 1)
        else:
            self._record()

    # -- one round

    def should_continue(self):
        return self.ctx.stop_reason is None

    def train(self):
        self.ctx.round += 1
        self.ctx.round_started = time.time()
        self.ctx.times = {}
        hyperparameters = self.inputs.hyperparameters.get_dict() if 'hyperparameters' in self.inputs else {}
        warm = self.inputs.warm_start.value if 'warm_start' in self.inputs else \
            get_kind(self.inputs.model_kind.value).training.warm_start
        parents = self.ctx.models if warm and 'models' in self.ctx else {}
        called = called_by_label(self)
        for target in self.ctx.targets:
            builder = TrainingCalculation.get_builder()
            builder.code = self.inputs.training_code
            builder.dataset = self.ctx.dataset
            builder.model_kind = self.inputs.model_kind
            builder.hyperparameters = orm.Dict({**hyperparameters, **({'target': target} if target in RADNET_TARGETS else {})})
            if target in parents:
                builder.parent_model = parents[target]
            node = submit_once(self, builder, f'train_round{self.ctx.round}_{target}', called)  # once, even across a daemon kill
            self.to_context(**{f'train_{target}': node})
        self.report(f'round {self.ctx.round}: training {self.ctx.targets} on {self.ctx.dataset.size} labels'
                    + (' from the last round\'s models' if parents else ''))

    def inspect_training(self):
        self.ctx.models = {}
        seconds = 0.0
        for target in self.ctx.targets:
            node = self.ctx[f'train_{target}']
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_TRAINING_FAILED.format(round=self.ctx.round, message=f'{target}: {node.exit_message}')
            self.ctx.models[target] = node.outputs.model
            seconds += (node.mtime - node.ctime).total_seconds()
        self.ctx.times['training_seconds'] = seconds

    def _settings(self):
        selection = self.inputs.selection.get_dict() if 'selection' in self.inputs else {}
        settings = {'kind': self.ctx.dataset_kind, **self.ctx.trust, 'batch': min(self.inputs.batch_size.value, self._budget_left()),
                    'min_separation': selection.get('min_separation'), 'min_distance': selection.get('min_distance', 0.5),
                    'asr_tolerance': selection.get('asr_tolerance', 0.1),
                    'instability_share': selection.get('instability_share', INSTABILITY_SHARE)}
        if self.ctx.dataset_kind == 'response':
            reference = self.inputs.labelling.reference
            settings['reference_positions'] = [site.position for site in reference.sites]
            settings['reference_cell'] = reference.cell
        else:  # the Mg protocol's fixed FFT grid bounds the cells it can label
            overrides = self.inputs.labelling.overrides.get_dict() if 'overrides' in self.inputs.labelling else None
            parameters = get_protocol_inputs(MG_PROTOCOLS, self.inputs.labelling.protocol.value, overrides)['parameters']
            settings.update({'ngfft': parameters['ngfft'], 'ecut': parameters['ecut']})
        return settings

    def _budget_left(self):
        return max(self.inputs.budget.value - self.ctx.labels_run, 0)

    def score(self):
        start = time.time()
        models = {f'model_{target}': model for target, model in self.ctx.models.items()}
        previous = {'previous': self.ctx.picked_predictions} if 'picked_predictions' in self.ctx else {}
        outputs = score_pool(self.ctx.pool, self.ctx.dataset, orm.Dict(self._settings()), **models, **previous)
        self.ctx.times['scoring_seconds'] = time.time() - start
        if 'test_dataset' in self.inputs:
            self.ctx.test_errors = evaluate_models(self.inputs.test_dataset, **models)
        self.ctx.decisions = outputs['decisions']
        self.ctx.picks = outputs['picks']
        self.ctx.picked_predictions = outputs['picked_predictions']
        decisions = self.ctx.decisions.get_dict()
        self.report(f'round {self.ctx.round}: pool {decisions["pool"]}: {decisions["counts"]}, '
                    f'{decisions["fraction_below_lo"]:.3f} below lo; {len(decisions["picks"])} picked')
        self.ctx.stop_reason = self._stop_reason(decisions)
        if self.ctx.stop_reason:
            self._record()
            self.report(f'stop: {self.ctx.stop_reason}')

    def _stop_reason(self, decisions):
        if self._budget_left() == 0:
            return f'budget spent ({self.ctx.labels_run} DFT labels)'
        if self.ctx.round > self.inputs.max_rounds.value:
            return f'round limit ({self.inputs.max_rounds.value} labelling rounds)'
        if decisions['fraction_below_lo'] >= self.inputs.accurate_ratio.value:
            return f'accurate ratio: {decisions["fraction_below_lo"]:.3f} of the pool below lo >= {self.inputs.accurate_ratio.value}'
        if 'property_tolerance' in self.inputs and self.ctx.previous_reference is not None:
            change = max(np.abs(np.subtract(decisions['reference_prediction'][c]['mean'], self.ctx.previous_reference[c]['mean'])).max()
                         / decisions['scales'][c] for c in decisions['reference_prediction'])
            if change < self.inputs.property_tolerance.value:
                return f'property converged: the prediction at the reference moved {change:.3g} (relative) < {self.inputs.property_tolerance.value}'
        self.ctx.previous_reference = decisions['reference_prediction']
        if not decisions['picks']:
            return 'no candidate left between lo and hi'
        return None

    def should_label(self):
        return self.ctx.stop_reason is None

    def label_picks(self):
        picks = self.ctx.picks
        self.ctx.labels_run += len(picks.get_array('configuration_index'))
        node = submit_once(self, self._labelling(picks, self.ctx.dataset), f'labels_round{self.ctx.round}')
        self.report(f'round {self.ctx.round}: labelling {picks.get_array("configuration_index").tolist()}: {node.process_label}<{node.pk}>')
        return self.to_context(labels=node)

    def _record(self):
        times = {**self.ctx.times, 'labels': int(self.ctx.dataset.size), 'dft_labels_run': self.ctx.labels_run,
                 'round': self.ctx.round, 'wall_seconds': time.time() - self.ctx.round_started}
        overhead = times.get('training_seconds', 0) + times.get('scoring_seconds', 0)
        times['overhead_fraction'] = overhead / max(overhead + times.get('dft_seconds', 0), 1e-9)
        extra = {'test_errors': self.ctx.test_errors} if 'test_errors' in self.ctx else {}
        self.ctx.records[f'round_{self.ctx.round:03d}'] = record_round(self.ctx.decisions, orm.Dict(times), **extra)

    def finalize(self):
        self.out('dataset', self.ctx.dataset)
        for target, model in self.ctx.models.items():
            self.out(f'models.{target}', model)
        self.out('rounds', round_table(**self.ctx.records))
        self.out('stop_reason', stop_reason(orm.Str(self.ctx.stop_reason)))
        self.report(f'campaign done after {self.ctx.round} rounds, {self.ctx.dataset.size} labels: {self.ctx.stop_reason}')


@calcfunction
def stop_reason(reason: orm.Str) -> orm.Str:
    """The stop rule that ended the campaign (a calcfunction, so the output has a creator)."""
    return orm.Str(reason.value)
