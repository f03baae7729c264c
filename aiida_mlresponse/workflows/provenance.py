"""Provenance queries: the ABINIT calculations behind a dataset, and the datasets a calculation fed.

A dataset is made by a calcfunction whose inputs are the parser outputs (`ArrayData`) of the
ABINIT CalcJobs, so both directions are one QueryBuilder path:
CalcJobNode -> ArrayData -> CalcFunctionNode -> DatasetData.
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


def calculations_behind(dataset: DatasetData) -> list[orm.CalcJobNode]:
    """Every ABINIT CalcJob whose results went into `dataset`, in creation order."""
    nodes = _path({'id': dataset.pk}, {}, 'calc').all(flat=True)
    return sorted(nodes, key=lambda node: node.ctime)


def datasets_fed_by(calculation: orm.CalcJobNode) -> list[DatasetData]:
    """Every dataset that contains results of `calculation`."""
    nodes = _path({}, {'id': calculation.pk}, 'dataset').all(flat=True)
    return sorted(nodes, key=lambda node: node.ctime)
