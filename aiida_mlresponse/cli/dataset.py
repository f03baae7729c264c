"""`aiida-mlresponse dataset`: export a `DatasetData` to the schema's `.npz` file, import one back, harvest the
finished labels of a stopped labelling work chain, merge datasets into one."""

from __future__ import annotations

import click

from . import cli
from .arguments import existing_file, load_node


@cli.group()
def dataset():
    """Move datasets between the AiiDA profile and `.npz` files (columns and units of `data.schema`)."""


@dataset.command('export')
@click.argument('identifier')
@click.argument('output', type=click.Path(dir_okay=False, writable=True))
@click.option('--required-only', is_flag=True,
              help="Leave out the schema's optional columns (the Mg fields): a small file of the scalars to commit.")
def dataset_export(identifier, output, required_only):
    """Write the DatasetData IDENTIFIER (pk or uuid) to OUTPUT (.npz)."""
    from aiida_mlresponse.data.dataset import DatasetData

    node = load_node(identifier, DatasetData, 'DatasetData')
    path = node.export_npz(output, required_only=required_only)
    click.echo(f'{node.kind} dataset <{node.pk}>: {node.size} rows, columns '
               f'{", ".join(sorted(node.column_names(required_only)))} -> {path}')


@dataset.command('import')
@click.argument('path')
@click.option('--label', default=None, help='Label of the new node.')
def dataset_import(path, label):
    """Store the dataset file PATH as a new DatasetData node (refused if it does not match its kind's schema)."""
    from aiida import load_profile

    from aiida_mlresponse.data.dataset import DatasetData
    from aiida_mlresponse.data.schema import SchemaError

    path = existing_file(path, 'dataset file')
    load_profile()
    try:
        node = DatasetData.from_npz(path)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from None
    if label:
        node.label = label
    node.store()
    click.echo(f'{node.kind} dataset <{node.pk}> ({node.uuid}): {node.size} rows')


@dataset.command('merge')
@click.argument('identifiers', nargs=-1, required=True)
def dataset_merge(identifiers):
    """One DatasetData with the rows of the datasets IDENTIFIERS (pks or uuids, in that order), made by the
    calcfunction `workflows.labels.merge_datasets` (linked to each): a campaign's `--dataset` from several earlier
    campaigns. Refused if the kinds or the labels' settings (the Mg FFT grid, the atoms) differ."""
    from aiida_mlresponse.data.dataset import DatasetData

    nodes = [load_node(identifier, DatasetData, 'DatasetData') for identifier in identifiers]
    if len(nodes) < 2:
        raise click.ClickException('give at least two datasets to merge.')
    from aiida_mlresponse.workflows.labels import merge_datasets, mergeable

    reason = mergeable(nodes)
    if reason:
        raise click.ClickException(reason)
    merged = merge_datasets(**{f'dataset_{i}': node for i, node in enumerate(nodes)})
    click.echo(f'{merged.kind} dataset <{merged.pk}> ({merged.uuid}): {merged.size} rows from '
               + ', '.join(f'<{n.pk}> ({n.size})' for n in nodes))


@dataset.command('harvest')
@click.argument('identifier')
def dataset_harvest(identifier):
    """One DatasetData from the configurations the LabelsWorkChain IDENTIFIER (pk or uuid) finished, also when it
    was killed or stopped before its end (`workflows.labels.harvest_labels`)."""
    from aiida.orm import WorkChainNode

    node = load_node(identifier, WorkChainNode, 'WorkChainNode')
    if node.process_label != 'LabelsWorkChain':
        raise click.ClickException(f'<{node.pk}> is a {node.process_label}, not a LabelsWorkChain.')
    from aiida_mlresponse.workflows.labels import harvest_labels

    try:
        harvested = harvest_labels(node)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f'{harvested.kind} dataset <{harvested.pk}> ({harvested.uuid}): {harvested.size} rows from '
               f'{node.process_label}<{node.pk}> ({node.process_state.value})')

