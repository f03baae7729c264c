"""Provenance queries: the ABINIT calculations behind a dataset, and the datasets a calculation fed.

A dataset is made by a calcfunction whose inputs are the parser outputs (`ArrayData`) of the
ABINIT CalcJobs, so both directions are one QueryBuilder path:
CalcJobNode -> ArrayData -> CalcFunctionNode -> DatasetData.
A dataset that extends another (`LabelsWorkChain` with `dataset`) has the older one among its
creator's inputs; both queries follow that chain too.
"""

from __future__ import annotations

from aiida import orm

from aiida_mlresponse.data.dataset import DatasetData


def _path(dataset_filters: dict, calc_filters: dict, project: str) -> orm.QueryBuilder:
    qb = orm.QueryBuilder()
    qb.append(orm.CalcJobNode, filters=calc_filters, tag='calc', project=['*'] if project == 'calc' else [])
    qb.append(orm.ArrayData, with_incoming='calc', tag='labels')
    qb.append(orm.CalcFunctionNode, with_incoming='labels', tag='collect')
    qb.append(DatasetData, with_incoming='collect', filters=dataset_filters, project=['*'] if project == 'dataset' else [])
    qb.distinct()
    return qb


def _extension(dataset_filters: dict, direction: str) -> orm.QueryBuilder:
    """Datasets one `collect` step before (`older`) or after (`newer`) the filtered one."""
    qb = orm.QueryBuilder()
    if direction == 'older':
        qb.append(DatasetData, filters=dataset_filters, tag='start')
        qb.append(orm.CalcFunctionNode, with_outgoing='start', tag='collect')
        qb.append(DatasetData, with_outgoing='collect', project=['*'])
    else:
        qb.append(DatasetData, filters=dataset_filters, tag='start')
        qb.append(orm.CalcFunctionNode, with_incoming='start', tag='collect')
        qb.append(DatasetData, with_incoming='collect', project=['*'])
    return qb


def _closure(datasets: list, direction: str) -> dict:
    """pk -> dataset for `datasets` and every dataset they extend (`older`) or that extends them (`newer`)."""
    found = {node.pk: node for node in datasets}
    frontier = list(found)
    while frontier:
        step = _extension({'id': {'in': frontier}}, direction).all(flat=True)
        frontier = [node.pk for node in step if node.pk not in found]
        found.update({node.pk: node for node in step})
    return found


def calculations_behind(dataset: DatasetData) -> list[orm.CalcJobNode]:
    """Every ABINIT CalcJob whose results went into `dataset` (or a dataset it extends), in creation order."""
    datasets = _closure([dataset], 'older')
    nodes = _path({'id': {'in': list(datasets)}}, {}, 'calc').all(flat=True)
    return sorted({node.pk: node for node in nodes}.values(), key=lambda node: node.ctime)


def datasets_fed_by(calculation: orm.CalcJobNode) -> list[DatasetData]:
    """Every dataset that contains results of `calculation`, directly or by extending one that does."""
    direct = _path({}, {'id': calculation.pk}, 'dataset').all(flat=True)
    return sorted(_closure(direct, 'newer').values(), key=lambda node: node.ctime)


def why_labelled(dataset: DatasetData, configuration_index: int) -> dict:
    """Why the configuration with `configuration_index` in `dataset` was labelled, read from the provenance graph.

    Row -> its ABINIT calculation -> the labelling work chain that ran it -> that work chain's
    `configurations` input -> the calcfunction that made it: a sampler (an initial sample, with its
    inputs) or an active-learning round's `score_pool` (the pick's rank, score and rule, and the round).
    """
    indices = list(dataset.get_array('configuration_index'))
    if configuration_index not in indices:
        raise ValueError(f'configuration {configuration_index} is not in dataset <{dataset.pk}>.')
    row = indices.index(configuration_index)
    calculation = orm.load_node(dataset.base.attributes.get('calculations')[row])
    labels = calculation.caller.caller if calculation.caller is not None else None
    if labels is None or 'configurations' not in labels.inputs:
        return {'configuration_index': configuration_index, 'calculation': calculation.pk, 'reason': 'labelled outside a labelling work chain'}
    source = labels.inputs.configurations.creator
    answer = {'configuration_index': configuration_index, 'calculation': calculation.pk, 'labelling': labels.pk}
    if source is None:
        return {**answer, 'reason': 'given by hand (the configurations node has no creator)'}
    if source.process_label == 'score_pool':
        decisions = source.outputs.decisions.get_dict()
        pick = next(p for p in decisions['picks'] if p['configuration_index'] == configuration_index)
        campaign = source.caller
        round_number = sorted(n.pk for n in campaign.called if n.process_label == 'score_pool').index(source.pk) + 1
        return {**answer, 'reason': 'active learning pick', 'campaign': campaign.pk, 'round': round_number,
                'score_pool': source.pk, **pick, 'trust': decisions['trust']}
    inputs = {link.link_label: link.node for link in source.base.links.get_incoming().all()}
    return {**answer, 'reason': f'sampled by {source.process_label}', 'sampler': source.pk,
            'sampler_inputs': {key: node.value for key, node in inputs.items() if hasattr(node, 'value')}}


def campaign_rounds(campaign) -> list[dict]:
    """The round table of an active-learning campaign, finished or still running (from its `record_round` steps)."""
    if 'rounds' in campaign.outputs:
        return campaign.outputs.rounds.get_dict()['rounds']
    records = sorted((n for n in campaign.called if n.process_label == 'record_round' and 'result' in n.outputs),
                     key=lambda n: n.ctime)
    return [n.outputs.result.get_dict() for n in records]
