"""A production profile (PostgreSQL + RabbitMQ) in a throw-away AiiDA config folder, made by the same command a
user runs (`aiida-mlresponse setup --production`); its database, broker user and daemon are removed afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import time

import pytest

BIN = pathlib.Path(sys.executable).parent


@dataclasses.dataclass
class ProductionProfile:
    name: str
    env: dict
    config_dir: pathlib.Path
    setup_output: str
    setup_seconds: float

    def run(self, *command, timeout=600, check=True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(command), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f'{command}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}'
        return done

    def verdi(self, *args, **kwargs):
        return self.run(str(BIN / 'verdi'), '-p', self.name, *args, **kwargs)

    def setup(self, *extra):
        return self.run(str(BIN / 'aiida-mlresponse'), 'setup', '--production', '--profile-name', self.name, *extra,
                        timeout=1800)

    def credentials(self) -> dict:
        return json.loads((self.config_dir / 'mlresponse-production.json').read_text())[self.name]


@pytest.fixture(scope='session')
def production_profile(tmp_path_factory):
    root = tmp_path_factory.mktemp('aiida_production')
    name = f'ci-{secrets.token_hex(3)}'
    env = dict(os.environ, AIIDA_PATH=str(root), PATH=f'{BIN}:{os.environ["PATH"]}')
    profile = ProductionProfile(name, env, root / '.aiida', '', 0.0)
    try:
        began = time.monotonic()
        done = profile.setup()
        profile.setup_output, profile.setup_seconds = done.stdout, time.monotonic() - began
        yield profile
    finally:
        profile.verdi('daemon', 'stop', check=False, timeout=120)
        from aiida_mlresponse.cli import services

        if (profile.config_dir / 'mlresponse-production.json').exists():
            credentials = profile.credentials()
            services.drop_database(credentials['database_name'], credentials['database_username'],
                                   services.start_postgres())
            services.drop_broker_user(credentials['broker_username'], credentials['broker_virtual_host'])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope='session')
def slurm_partition():
    from aiida_mlresponse.cli import services

    return services.start_slurm()


@pytest.fixture
def slurm_codes(aiida_profile, slurm_partition):
    from aiida import orm

    from aiida_mlresponse.cli.production import ensure_slurm_computer
    from aiida_mlresponse.cli.setup import ensure_codes, find_executables

    computer, _ = ensure_slurm_computer(slurm_partition)
    ensure_codes(computer, find_executables())
    return {name: orm.load_code(f'{name}@{computer.label}') for name in ('abinit', 'mlresponse-python')}


def kill_daemon(config_dir: pathlib.Path, profile: str) -> list[int]:
    """SIGKILL the daemon of `profile`: circus, its children (the worker) and an embedded ZeroMQ broker; the pids."""
    import signal

    pid_file = config_dir / 'daemon' / f'circus-{profile}.pid'
    circus = int(pid_file.read_text())
    children = subprocess.run(['pgrep', '-P', str(circus)], capture_output=True, text=True).stdout.split()
    pids = {circus, *map(int, children)}
    for broker_pid in (config_dir / 'broker').glob('*/broker.pid'):
        pids.add(int(broker_pid.read_text().split()[-1]))  # 'aiida-zeromq-broker PID'
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return sorted(pids)


def outside_addresses() -> list[str]:
    """This machine's own addresses that are not loopback (from /proc/net/fib_trie: no iproute2 needed)."""
    import ipaddress
    import re

    text = pathlib.Path('/proc/net/fib_trie').read_text()
    found = {match for match in re.findall(r'\|-- (\S+)\n\s+/32 host LOCAL', text)}
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


def connections_accepted_from_outside(ports) -> list[tuple[str, int]]:
    """(address, port) pairs where a TCP connection to this machine's non-loopback addresses is accepted."""
    import socket

    accepted = []
    for address in outside_addresses():
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(3)
                if probe.connect_ex((address, port)) == 0:
                    accepted.append((address, port))
    return accepted


def record_fault(key: str, value: dict):
    """Merge a fault test's counts into the results file named by MLRESPONSE_RESULTS (`make test-faults` sets it to
    benchmarks/results/production.json); nothing without it."""
    path = os.environ.get('MLRESPONSE_RESULTS')
    if path:
        from benchmarks.production import merge_results

        merge_results(pathlib.Path(path), 'faults', key, value)
