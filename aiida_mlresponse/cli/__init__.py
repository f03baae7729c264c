"""The `aiida-mlresponse` command line."""

from __future__ import annotations

import os

import click


class OneLineErrors(click.Group):
    """An error no command reported itself is one line and exit status 1, never a traceback
    (`AIIDA_MLRESPONSE_TRACEBACK=1` shows the traceback, for bug reports)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get('AIIDA_MLRESPONSE_TRACEBACK'):
                raise
            from aiida.common.exceptions import ConfigurationError

            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
            if isinstance(exc, ConfigurationError):
                raise click.ClickException(f'no AiiDA profile ({text}): create one with `aiida-mlresponse setup`.') from None
            raise click.ClickException(f'{type(exc).__name__}: {text}' if text else type(exc).__name__) from None


@click.group(cls=OneLineErrors)
def cli():
    """aiida-mlresponse: ABINIT labels, ML response committees and derived properties."""


@cli.command()
@click.option('--production', is_flag=True,
              help='PostgreSQL + RabbitMQ profile (services installed and started on loopback) instead of SQLite + ZeroMQ.')
@click.option('--slurm', is_flag=True, help='With --production: also a one-node SLURM cluster and its computer.')
@click.option('--profile-name', default='mlresponse-production', show_default=True, help='With --production.')
def setup(production, slurm, profile_name):
    """Create (once) the AiiDA profile, localhost codes and pseudopotential families."""
    if production:
        from .production import run_production_setup

        run_production_setup(profile_name, slurm=slurm)
        return
    if slurm:
        raise click.UsageError('--slurm needs --production.')
    from .setup import run_setup

    run_setup()


from . import campaign, dataset, predict, provenance  # noqa: E402,F401  (register their commands on `cli`)
