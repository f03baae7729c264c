"""`LabelsWorkChain`: the one labelling interface of both model families.

It labels a given list of configurations with ABINIT at a protocol and returns (or extends) one
`DatasetData` whose columns are those of the kind's schema (`data.schema`):

- `response` (displaced polar solids): `configurations` holds `positions` (N, atoms, 3) Å and
  optionally `cells` (N, 3, 3) Å of the `reference` structure's atoms; each row is an
  `AbinitResponseBaseWorkChain` (Berry-phase P, DFPT ε∞; Born charges with `response.phonons`).
  The reference is labelled first (unless `reference_arrays` is given): its P fixes the
  Berry-phase branch of every configuration.
- `mg_strain` (strained hcp Mg): `configurations` holds `deformations` (N, 6) and optionally `R`
  (N, 3), the internal coordinates to start each relaxation from; each row is an
  `MgRelaxBaseWorkChain`. With `warm_start`, rows without `R` start from R(D) fitted to the rows
  already labelled (this run and the extended dataset): BFGS needs fewer steps.

`configurations` may carry `configuration_index` (N,): the row indices written to the dataset
(an active-learning pool's indices, say); the default is 0..N-1. At most `max_concurrent` ABINIT
jobs run at once. A configuration that still fails after the restart handlers is left out and
recorded, with its reason, in the `failed` output; fewer successes than `min_success_fraction`
fail the work chain. The dataset is made by a calcfunction whose inputs are the outputs of every
calculation, so its provenance reaches each ABINIT run (`workflows.provenance`).

Samplers make the configurations (`sample_displacement_configurations`,
`sample_deformation_configurations`), as calcfunctions, so their seeds are on record too.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import WorkChain, calcfunction, if_, while_

from aiida_mlresponse.abinit.inputs import AbinitInputError
from aiida_mlresponse.abinit.protocols import ProtocolError
from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.data.schema import SCHEMAS
from aiida_mlresponse.workflows import label_rows
from aiida_mlresponse.workflows.launch import called_by_label, submit_once
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain

#: dataset kind -> the restart work chain that labels one configuration of it
LABELLERS = {'response': AbinitResponseBaseWorkChain, 'mg_strain': MgRelaxBaseWorkChain}
#: dataset kind -> the arrays `configurations` must (and may) hold
CONFIGURATION_ARRAYS = {'response': (('positions',), ('cells',)), 'mg_strain': (('deformations',), ('R',))}


@calcfunction
def sample_displacement_configurations(structure, sigma, count, seed, freeze_z=lambda: orm.Bool(False)):
    """`count` copies of `structure` with every atom displaced by N(0, σ²) (σ in Å), seeded: `positions` (Å)."""
    from aiida_mlresponse.sampling.displacements import sample_displacements

    positions = np.array([site.position for site in structure.sites], dtype=float)
    configurations = orm.ArrayData()
    configurations.set_array('positions', sample_displacements(positions, sigma.value, count.value, seed.value, freeze_z.value))
    return configurations


@calcfunction
def sample_deformation_configurations(count, seed, sigma_lambda, sigma_theta_deg):
    """`count` deformations D of the Mg cell (truncated normal at 2σ, seeded): `deformations` (N, 6)."""
    from aiida_mlresponse.sampling.deformations import sample_deformations

    configurations = orm.ArrayData()
    configurations.set_array('deformations', sample_deformations(count.value, seed.value, sigma_lambda.value, sigma_theta_deg.value))
    return configurations


def validate_inputs(inputs, _):
    if 'kind' not in inputs or 'configurations' not in inputs:
        return None  # exposed in a work chain that sets them itself; the ports' own `required` covers direct use
    kind = inputs['kind'].value
    if kind not in LABELLERS:
        return f'unknown dataset kind `{kind}`; known kinds: {", ".join(LABELLERS)}.'
    configurations = inputs['configurations']
    names = set(configurations.get_arraynames())
    required, optional = CONFIGURATION_ARRAYS[kind]
    missing = set(required) - names
    unknown = names - set(required) - set(optional) - {'configuration_index'}
    if missing or unknown:
        return (f'`configurations` of kind {kind} must hold {", ".join(required)} (optional: '
                f'{", ".join((*optional, "configuration_index"))}); missing {sorted(missing)}, unknown {sorted(unknown)}.')
    if kind == 'response' and 'reference' not in inputs:
        return 'kind `response` needs the `reference` structure (its cell and species, and its P fixes the branch).'
    if 'dataset' in inputs and inputs['dataset'].kind != kind:
        return f'cannot extend a `{inputs["dataset"].kind}` dataset with `{kind}` labels.'
    try:
        label_rows.configuration_structures(kind, configurations, inputs.get('reference'), check_only=True)
    except ValueError as exc:
        return str(exc)


class LabelsWorkChain(WorkChain):
    """Label N configurations (displaced structures or Mg deformations) with ABINIT; one dataset node."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('kind', valid_type=orm.Str, help=f'Dataset kind: {", ".join(SCHEMAS)}.')
        spec.input('code', valid_type=orm.AbstractCode, help='The ABINIT code.')
        spec.input('configurations', valid_type=orm.ArrayData,
                   help='response: positions (N, atoms, 3) Å [, cells]; mg_strain: deformations (N, 6) [, R]; '
                        'optional configuration_index (N,).')
        spec.input('reference', valid_type=orm.StructureData, required=False,
                   help='response: the equilibrium structure (species, default cell, P branch).')
        spec.input('reference_arrays', valid_type=orm.ArrayData, required=False,
                   help='response: labels of the reference already computed (skips its run).')
        spec.input('protocol', valid_type=orm.Str, default=lambda: orm.Str('fast'), help='test, fast, moderate or precise.')
        spec.input('overrides', valid_type=orm.Dict, required=False, help='Deep-merged over the protocol entry.')
        spec.input('response', valid_type=orm.Dict, required=False,
                   help='response: switches {polarization, dielectric, phonons} of AbinitResponseCalculation.')
        spec.input('warm_start', valid_type=orm.Bool, default=lambda: orm.Bool(False),
                   help='mg_strain: start each relaxation from R(D) fitted to the rows already labelled.')
        spec.input('dataset', valid_type=DatasetData, required=False, help='A dataset of the same kind to extend.')
        spec.input('max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(2),
                   help='ABINIT jobs in flight at once (several serial jobs beat one MPI job on a few cores).')
        spec.input('min_success_fraction', valid_type=orm.Float, default=lambda: orm.Float(0.5),
                   help='Fail when fewer configurations than this fraction were labelled.')
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.needs_reference)(cls.run_reference, cls.inspect_reference),
            while_(cls.has_pending)(cls.submit_batch, cls.inspect_batch),
            cls.collect,
        )
        spec.output('dataset', valid_type=DatasetData, help='The labelled rows (after those of `dataset`, if given).')
        spec.output('failed', valid_type=orm.Dict, help='index -> configuration, exit status, message, pk of each left-out one.')
        spec.output('reference_arrays', valid_type=orm.ArrayData, required=False, help='response: labels of the reference.')
        spec.exit_code(481, 'ERROR_REFERENCE_FAILED', message='The reference structure could not be labelled: {message}')
        spec.exit_code(482, 'ERROR_TOO_MANY_FAILURES', message='Only {done} of {total} configurations were labelled.')
        spec.exit_code(488, 'ERROR_INVALID_CONFIGURATION',
                       message='{count} configuration(s) cannot be labelled at protocol `{protocol}`, none was run; the '
                               'first, index {index}: {error}')

    @classmethod
    def get_builder_from_protocol(cls, code, configurations, kind, reference=None, protocol='fast', overrides=None,
                                  response=None, warm_start=False, dataset=None, max_concurrent=2):
        """A builder; every ABINIT input comes from `protocol` (and `overrides`) inside the work chain."""
        builder = cls.get_builder()
        builder.kind = orm.Str(kind)
        builder.code = code
        builder.configurations = configurations
        if reference is not None:
            builder.reference = reference
        builder.protocol = orm.Str(protocol)
        if overrides:
            builder.overrides = orm.Dict(overrides)
        if response:
            builder.response = orm.Dict(response)
        builder.warm_start = orm.Bool(warm_start)
        if dataset is not None:
            builder.dataset = dataset
        builder.max_concurrent = orm.Int(max_concurrent)
        return builder

    # -- set-up: every configuration's builder is made once here, so bad input fails before any ABINIT run

    def _builder(self, structure, extra=None):
        kind = self.inputs.kind.value
        overrides = self.inputs.overrides.get_dict() if 'overrides' in self.inputs else None
        if kind == 'response':
            return AbinitResponseBaseWorkChain.get_builder_from_protocol(
                self.inputs.code, structure, protocol=self.inputs.protocol.value, overrides=overrides,
                response=self.inputs.response.get_dict() if 'response' in self.inputs else None, **(extra or {}))
        return MgRelaxBaseWorkChain.get_builder_from_protocol(
            self.inputs.code, structure=structure, protocol=self.inputs.protocol.value, overrides=overrides)

    def setup(self):
        kind = self.inputs.kind.value
        configurations = self.inputs.configurations
        count = label_rows.configuration_count(kind, configurations)
        self.ctx.indices = (configurations.get_array('configuration_index').astype(int).tolist()
                            if 'configuration_index' in configurations.get_arraynames() else list(range(count)))
        invalid = []
        for index, structure in zip(self.ctx.indices, label_rows.configuration_structures(
                kind, configurations, self.inputs.get('reference'))):
            try:
                self._builder(structure)
            except (ProtocolError, AbinitInputError) as error:  # input no run could take: stop before any run
                invalid.append((index, error))
        if invalid:
            return self.exit_codes.ERROR_INVALID_CONFIGURATION.format(
                count=len(invalid), protocol=self.inputs.protocol.value, index=invalid[0][0], error=invalid[0][1])
        self.ctx.pending = list(range(count))
        self.ctx.labelled = {}  # position in `configurations` -> restart work chain node
        self.ctx.failed = {}
        self.report(f'{count} {kind} configurations to label at protocol `{self.inputs.protocol.value}`, '
                    f'{self.inputs.max_concurrent.value} at a time')

    def needs_reference(self):
        return self.inputs.kind.value == 'response' and 'reference_arrays' not in self.inputs

    def run_reference(self):
        node = submit_once(self, self._builder(self.inputs.reference), 'reference')
        self.report(f'labelling the reference structure: {node.process_label}<{node.pk}>')
        return self.to_context(reference=node)

    def inspect_reference(self):
        node = self.ctx.reference
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_REFERENCE_FAILED.format(message=f'{node.process_label}<{node.pk}> exit status {node.exit_status}')

    def has_pending(self):
        return bool(self.ctx.pending)

    def _warm_starts(self):
        """mg_strain with `warm_start`: the (D, R) rows finished so far to fit R(D) on, once per batch; else None."""
        if (self.inputs.kind.value != 'mg_strain' or not self.inputs.warm_start.value
                or 'R' in self.inputs.configurations.get_arraynames()):
            return None
        done_d, done_r = self._finished_coordinates()
        return (done_d, done_r) if len(done_d) >= label_rows.WARM_START_MIN_ROWS else None

    def _structure_for(self, position, warm_starts=None):
        configurations = self.inputs.configurations
        if warm_starts is not None:
            from aiida_mlresponse.sampling.deformations import warm_start_coordinates

            deformation = configurations.get_array('deformations')[position]
            r_params = warm_start_coordinates(*warm_starts, deformation[None])[0]
            return label_rows.mg_structure(deformation, r_params)
        return label_rows.configuration_structures(self.inputs.kind.value, configurations, self.inputs.get('reference'),
                                                   rows=[position])[0]

    def _finished_coordinates(self):
        """(D, R) of the rows labelled so far: this run's, then the extended dataset's."""
        pairs = [(node.outputs.output_arrays.get_array('deformation'), node.outputs.output_arrays.get_array('R'))
                 for node in self.ctx.labelled.values()]
        d = [p[0] for p in pairs]
        r = [p[1] for p in pairs]
        if 'dataset' in self.inputs:
            d.extend(self.inputs.dataset.get_array('deformation'))
            r.extend(self.inputs.dataset.get_array('R'))
        return np.array(d).reshape(-1, 6), np.array(r).reshape(-1, 3)

    def _reference_arrays(self):
        if 'reference_arrays' in self.inputs:
            return self.inputs.reference_arrays
        return self.ctx.reference.outputs.output_arrays

    def submit_batch(self):
        size = self.inputs.max_concurrent.value
        batch, self.ctx.pending = self.ctx.pending[:size], self.ctx.pending[size:]
        extra = {'reference_polarization': self._reference_arrays()} if self.inputs.kind.value == 'response' else None
        warm_starts = self._warm_starts()
        called = called_by_label(self)  # children launched before a daemon kill are adopted, not launched again
        for position in batch:
            builder = self._builder(self._structure_for(position, warm_starts), extra)
            node = submit_once(self, builder, f'label_{self.ctx.indices[position]}', called)
            node.base.extras.set('configuration_index', self.ctx.indices[position])
            self.to_context(**{f'row_{position}': node})
        self.ctx.batch = batch
        self.report(f'submitted configurations {[self.ctx.indices[p] for p in batch]}; {len(self.ctx.pending)} left')

    def inspect_batch(self):
        for position in self.ctx.batch:
            node = self.ctx[f'row_{position}']
            if node.is_finished_ok and label_rows.has_label_outputs(self.inputs.kind.value, node):
                self.ctx.labelled[position] = node
            else:
                index = self.ctx.indices[position]
                self.ctx.failed[str(index)] = {'position': position, 'exit_status': node.exit_status,
                                               'message': node.exit_message or '', 'pk': node.pk}
                self.report(f'configuration {index} left out: {node.process_label}<{node.pk}> '
                            f'exit status {node.exit_status} {node.exit_message or ""}')

    def collect(self):
        if 'reference_arrays' not in self.inputs and self.inputs.kind.value == 'response':
            self.out('reference_arrays', self.ctx.reference.outputs.output_arrays)
        self.out('failed', left_out_configurations(self.inputs.configurations, orm.Dict(self.ctx.failed)))
        total, done = len(self.ctx.indices), len(self.ctx.labelled)
        if done == 0 or done < self.inputs.min_success_fraction.value * total:
            return self.exit_codes.ERROR_TOO_MANY_FAILURES.format(done=done, total=total)
        dataset = collect_dataset(**collect_inputs(self.inputs, [(self.ctx.indices[position], node)
                                                                 for position, node in sorted(self.ctx.labelled.items())]))
        self.out('dataset', dataset)
        self.report(f'dataset <{dataset.pk}>: {done} of {total} configurations labelled, {dataset.size} rows in all')


@calcfunction
def left_out_configurations(configurations: orm.ArrayData, failures: orm.Dict) -> orm.Dict:
    """index -> configuration, exit status, message and pk of each left-out one (a calcfunction: on record)."""
    arrays = {name: configurations.get_array(name) for name in configurations.get_arraynames() if name != 'configuration_index'}
    return orm.Dict({index: {**failure, **{name: array[failure['position']].tolist() for name, array in arrays.items()}}
                     for index, failure in failures.get_dict().items()})


@calcfunction
def collect_dataset(kind: orm.Str, **inputs) -> DatasetData:
    """One DatasetData: the rows of `dataset` (if given), then one row per `row_<index>__<port>` group of outputs."""
    existing = inputs.pop('dataset', None)
    grouped: dict = {}
    for key, node in inputs.items():
        index, port = key[len('row_'):].split('__', 1)
        grouped.setdefault(int(index), {})[port] = node
    rows, attributes = label_rows.dataset_rows(kind.value, grouped)
    if existing is not None:
        old = existing.rows()
        rows = {name: np.concatenate([old[name], value]) for name, value in rows.items() if name in old}
        attributes['calculations'] = existing.base.attributes.get('calculations', []) + attributes['calculations']
    dataset = DatasetData()
    for key, value in attributes.items():
        dataset.base.attributes.set(key, value)
    dataset.set_rows(kind.value, rows)
    return dataset


#: attributes that record where rows came from; every other extra attribute (the Mg FFT grid, the atoms' symbols)
#: says how the labels were computed and must agree between datasets that become one training set
PROVENANCE_ATTRIBUTES = ('calculations', 'source_uuid', 'sources')


def mergeable(datasets) -> str | None:
    """Why `datasets` cannot be one training set (None if they can): another kind, or labels computed otherwise."""
    first = datasets[0]
    settings = {k: v for k, v in first.extra_attributes().items() if k not in PROVENANCE_ATTRIBUTES}
    for other in datasets[1:]:
        if other.kind != first.kind:
            return f'dataset <{other.pk}> is `{other.kind}`, dataset <{first.pk}> `{first.kind}`.'
        theirs = {k: v for k, v in other.extra_attributes().items() if k not in PROVENANCE_ATTRIBUTES}
        for key in sorted(set(settings) | set(theirs)):
            if settings.get(key) != theirs.get(key):
                return (f'`{key}` differs: {settings.get(key)} in dataset <{first.pk}>, {theirs.get(key)} in <{other.pk}> '
                        '(labels computed with other settings do not make one training set).')
    return None


@calcfunction
def merge_datasets(**datasets) -> DatasetData:
    """One DatasetData with the rows of `dataset_0`, `dataset_1`, ... in that order (the columns they all have), for a
    campaign that starts from the labels of several earlier ones. Each row keeps its `configuration_index`;
    the `sources` attribute says which rows came from which dataset (uuid)."""
    ordered = [datasets[key] for key in sorted(datasets, key=lambda key: int(key.rsplit('_', 1)[1]))]
    reason = mergeable(ordered)
    if reason:
        raise ValueError(reason)
    columns = set.intersection(*(set(d.column_names()) for d in ordered))
    rows = {name: np.concatenate([d.get_array(name) for d in ordered]) for name in sorted(columns)}
    merged = DatasetData()
    for key, value in ordered[0].extra_attributes().items():
        if key not in PROVENANCE_ATTRIBUTES:
            merged.base.attributes.set(key, value)
    merged.base.attributes.set('calculations', [c for d in ordered for c in d.base.attributes.get('calculations', [])])
    merged.base.attributes.set('sources', [{'uuid': d.uuid, 'rows': d.size} for d in ordered])
    merged.set_rows(ordered[0].kind, rows)
    return merged


def harvest_labels(node) -> DatasetData:
    """The labels a `LabelsWorkChain` `node` got, finished or not (killed, stopped for good): one DatasetData made
    by `collect_dataset` from the outputs of every configuration that finished (link label `label_<index>`), after
    the rows of the dataset it extended. For a campaign stopped early, so that its finished ABINIT runs still give a
    training set with provenance; for a finished one it gives the rows of its `dataset` output."""
    from aiida.common.links import LinkType

    kind = node.inputs.kind.value
    labelled = [(int(link.link_label[len('label_'):]), link.node)
                for link in node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()
                if link.link_label.startswith('label_') and link.node.is_finished_ok
                and label_rows.has_label_outputs(kind, link.node)]
    if not labelled:
        raise ValueError(f'{node.process_label}<{node.pk}> has no finished configuration to harvest.')
    return collect_dataset(**collect_inputs(node.inputs, labelled))


def collect_inputs(inputs, labelled) -> dict:
    """The inputs of `collect_dataset` for a labelling run's `inputs` (kind, dataset to extend) and its labelled
    configurations [(configuration index, finished labelling work chain)]."""
    kind = inputs['kind']
    collected = {'kind': kind, **({'dataset': inputs['dataset']} if 'dataset' in inputs else {})}
    for index, node in labelled:
        for port, output in label_rows.label_outputs(kind.value, node).items():
            collected[f'row_{index:06d}__{port}'] = output
    return collected
