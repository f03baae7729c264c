"""The `aiida-mlresponse` command line."""

from __future__ import annotations

import click


@click.group()
def cli():
    """aiida-mlresponse: ABINIT labels, ML response committees and derived properties."""


@cli.command()
def setup():
    """Create (once) the AiiDA profile, localhost codes and pseudopotential families."""
    from .setup import run_setup

    run_setup()


from . import dataset, predict, provenance  # noqa: E402,F401  (register their commands on `cli`)
