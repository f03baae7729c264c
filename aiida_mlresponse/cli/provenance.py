"""`aiida-mlresponse provenance`: from a dataset to its ABINIT calculations, and back."""

from __future__ import annotations

import click

from . import cli
from .arguments import load_node


@cli.group()
def provenance():
    """Query the provenance of datasets and ABINIT calculations."""


@provenance.command('calcs')
@click.argument('dataset')
def provenance_calcs(dataset):
    """List the ABINIT calculations behind DATASET (pk or uuid)."""
    from aiida_mlresponse.data.dataset import DatasetData
    from aiida_mlresponse.workflows.provenance import calculations_behind

    node = load_node(dataset, DatasetData, 'DatasetData')
    calcs = calculations_behind(node)
    click.echo(f'{node.kind} dataset <{node.pk}> ({node.size} rows) comes from {len(calcs)} calculations:')
    for calc in calcs:
        click.echo(f'  {calc.pk:>6}  {calc.uuid}  {calc.process_label}  exit {calc.exit_status}  {calc.ctime:%Y-%m-%d %H:%M}')


@provenance.command('datasets')
@click.argument('calculation')
def provenance_datasets(calculation):
    """List the datasets that contain results of CALCULATION (pk or uuid)."""
    from aiida import orm

    from aiida_mlresponse.workflows.provenance import datasets_fed_by

    node = load_node(calculation, orm.CalcJobNode, 'CalcJobNode')
    for dataset in datasets_fed_by(node):
        click.echo(f'  {dataset.pk:>6}  {dataset.uuid}  {dataset.kind}  {dataset.size} rows')
