"""`aiida-mlresponse provenance`: from a dataset to its ABINIT calculations, and back."""

from __future__ import annotations

import click

from . import cli


def _load(identifier: str):
    from aiida import load_profile, orm

    load_profile()
    return orm.load_node(identifier)


@cli.group()
def provenance():
    """Query the provenance of datasets and ABINIT calculations."""


@provenance.command('calcs')
@click.argument('dataset')
def provenance_calcs(dataset):
    """List the ABINIT calculations behind DATASET (pk or uuid)."""
    from aiida_mlresponse.data.dataset import DatasetData
    from aiida_mlresponse.workflows.provenance import calculations_behind

    node = _load(dataset)
    if not isinstance(node, DatasetData):
        raise click.ClickException(f'node {dataset} is a {type(node).__name__}, not a DatasetData.')
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

    node = _load(calculation)
    if not isinstance(node, orm.CalcJobNode):
        raise click.ClickException(f'node {calculation} is a {type(node).__name__}, not a CalcJobNode.')
    for dataset in datasets_fed_by(node):
        click.echo(f'  {dataset.pk:>6}  {dataset.uuid}  {dataset.kind}  {dataset.size} rows')
