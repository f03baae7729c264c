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
