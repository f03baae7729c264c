"""`aiida-mlresponse setup --production [--slurm]`: a PostgreSQL + RabbitMQ profile, and a SLURM computer.

The services come from `services`; the computer, codes and pseudo families from `setup.run_setup`, as for
the default profile. Credentials are generated once, kept in `<AiiDA config dir>/mlresponse-production.json`
(mode 600, outside any repository) and in AiiDA's own config.json (made mode 600 too).
"""

from __future__ import annotations

import os
import re
import time

import click

from . import services

PRODUCTION_PROFILE = 'mlresponse-production'
SLURM_COMPUTER = 'localhost-slurm'
CREDENTIALS_FILE = 'mlresponse-production.json'


def credentials_path():
    from aiida.manage.configuration.settings import AiiDAConfigDir

    return AiiDAConfigDir.get() / CREDENTIALS_FILE


def start_services(echo=click.echo) -> dict[str, int]:
    """PostgreSQL and RabbitMQ installed, configured for loopback and running; their ports."""
    ports = {}
    for name, start in (('postgresql', services.start_postgres), ('rabbitmq', services.start_rabbitmq)):
        began = time.monotonic()
        ports[name] = start()
        echo(f'service   {name:50s} up on {services.LOOPBACK}:{ports[name]} ({time.monotonic() - began:.1f} s)')
    return ports


def ensure_production_profile(name: str = PRODUCTION_PROFILE, echo=click.echo) -> tuple[str, bool]:
    """The `core.psql_dos` + `core.rabbitmq` profile `name` (made the default profile when created), loaded."""
    from aiida import load_profile
    from aiida.manage.configuration import create_profile, get_config

    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_-]{0,40}', name):
        raise click.BadParameter(f'{name!r}: use letters, digits, `-` and `_` (at most 41).', param_hint='--profile-name')
    ports = start_services(echo)
    credentials = services.load_or_create_credentials(credentials_path(), name)
    services.ensure_database(credentials['database_name'], credentials['database_username'],
                             credentials['database_password'], ports['postgresql'])
    services.ensure_broker_user(credentials['broker_username'], credentials['broker_password'],
                                credentials['broker_virtual_host'])
    config = get_config(create=True)
    created = name not in config.profile_names
    if created:
        storage = {key: credentials[key] for key in ('database_name', 'database_username', 'database_password')}
        storage.update(database_hostname=services.LOOPBACK, database_port=ports['postgresql'],
                       repository_uri=(credentials_path().parent / 'repository' / name).as_uri())
        broker = {key: credentials[key] for key in ('broker_username', 'broker_password', 'broker_virtual_host')}
        broker.update(broker_protocol='amqp', broker_host=services.LOOPBACK, broker_port=ports['rabbitmq'],
                      broker_parameters={})
        create_profile(config, name=name, email='aiida@localhost', storage_backend='core.psql_dos',
                       storage_config=storage, broker_backend='core.rabbitmq', broker_config=broker)
        config.set_default_profile(name, overwrite=True)
        # AiiDA warns about RabbitMQ >= 3.8.15 by version alone; its advice, a long consumer_timeout, is in
        # services.RABBITMQ_CONF.
        config.set_option('warnings.rabbitmq_version', False, scope=name)
        # `verdi daemon stop/status` give up after 2 s by default: too short for a busy node.
        config.set_option('daemon.timeout', 30, scope=name)
        config.store()
    os.chmod(config.filepath, 0o600)  # it holds the passwords too
    load_profile(name, allow_switch=True)
    return name, created


def ensure_slurm_computer(partition: str):
    """`localhost-slurm`: this machine through its SLURM cluster (`core.slurm` scheduler, `core.local` transport)."""
    from .setup import ensure_local_computer

    computer, created = ensure_local_computer(SLURM_COMPUTER, f'this machine through SLURM (partition {partition})',
                                              'core.slurm', 'aiida_slurm')
    computer.set_minimum_job_poll_interval(2.0)  # squeue on this machine is cheap
    return computer, created


def run_production_setup(profile_name: str = PRODUCTION_PROFILE, slurm: bool = False, echo=click.echo) -> dict:
    """Services, profile, localhost computer, codes and pseudo families; with `slurm`, the SLURM cluster and its
    computer with the same codes. Idempotent."""
    from .setup import ensure_codes, find_executables, run_setup

    changes = run_setup(echo, profile_step=lambda: ensure_production_profile(profile_name, echo))
    if slurm:
        began = time.monotonic()
        partition = services.start_slurm()
        echo(f'service   {"slurm (partition " + partition + ")":50s} up ({time.monotonic() - began:.1f} s)')
        computer, created = ensure_slurm_computer(partition)
        echo(f'computer  {computer.label:50s} {"created" if created else "exists"}')
        changes[computer.label] = created
        for label, created in ensure_codes(computer, find_executables()):
            echo(f'code      {label:50s} {"created" if created else "exists"}')
            changes[label] = created
    return changes
