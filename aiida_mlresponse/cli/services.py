"""The production services from Debian packages: PostgreSQL, RabbitMQ and a one-node SLURM cluster.

Each `start_*` installs what is missing, writes its configuration (loopback only where the service allows
it), starts the service when it is not running and waits until it answers; a second call changes nothing.
Passwords never appear on a command line (they would show in `ps`) or in a log: RabbitMQ reads them from
stdin and PostgreSQL receives a SCRAM-SHA-256 verifier, never the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pathlib
import secrets
import shutil
import subprocess
import time

import click

LOOPBACK = '127.0.0.1'
RABBITMQ_PORT = 5672
MARKER = '# written by `aiida-mlresponse setup --production`'
# No AiiDA process is cancelled for holding a task too long (RabbitMQ >= 3.8.15 defaults to 30 min);
# the value AiiDA's documentation recommends.
RABBITMQ_CONF = f"""{MARKER}: loopback only
listeners.tcp.1 = {LOOPBACK}:{RABBITMQ_PORT}
distribution.listener.interface = {LOOPBACK}
consumer_timeout = 31622400000
"""
RABBITMQ_ENV = f"""{MARKER}: the node and its port mapper on loopback only
NODENAME=rabbit@localhost
export ERL_EPMD_ADDRESS={LOOPBACK}
"""


class ServiceError(click.ClickException):
    """A service that could not be installed or started, with what to do about it."""


def _as_root(command: list[str]) -> list[str]:
    return command if os.geteuid() == 0 else ['sudo', '-n', *command]


def _as_user(user: str, command: list[str]) -> list[str]:
    return ['runuser', '-u', user, '--', *command] if os.geteuid() == 0 else ['sudo', '-n', '-u', user, *command]


def run(command: list[str], stdin: str | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `command`; on failure a ServiceError with its output (stdin, which may hold a secret, is never shown)."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f'`{" ".join(command)}` failed: {exc}') from exc
    if check and done.returncode != 0:
        raise ServiceError(f'`{" ".join(command)}` exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}')
    return done


def wait_for(predicate, what: str, timeout: float = 120, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ServiceError(f'{what} did not come up within {timeout:.0f} s.')
        time.sleep(interval)


def ensure_packages(packages: list[str]) -> list[str]:
    """apt-get install the Debian `packages` that are missing; returns those installed."""
    def installed(name):
        done = run(['dpkg-query', '-W', '-f=${Status}', name], check=False)
        return done.returncode == 0 and done.stdout.strip().endswith(' installed')

    missing = [name for name in packages if not installed(name)]
    if missing:
        if shutil.which('apt-get') is None:
            raise ServiceError(f'install {", ".join(missing)} (no apt-get on this machine).')
        run(_as_root(['apt-get', 'update', '-qq']), timeout=900)
        run(_as_root(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *missing]), timeout=1800)
    return missing


def write_config(path: pathlib.Path, text: str, append: bool = False) -> bool:
    """Write (or append) our block to a system file unless it is there already; True when it changed.
    A file of the same name written by someone else is not overwritten: the error says what to merge."""
    current = path.read_text() if path.exists() else ''
    if text in current:
        return False
    if current and not append and MARKER not in current:
        raise ServiceError(f'{path} exists and was not written by this command: add these lines yourself:\n{text}')
    new = current.rstrip('\n') + '\n' + text if append and current else text
    if os.geteuid() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new)
    else:
        run(['sudo', '-n', 'tee', str(path)], stdin=new)
    return True


def service(name: str, action: str):
    run(_as_root(['service', name, action]), timeout=300)


# --- PostgreSQL ---

def _postgres_cluster() -> tuple[str, str, int, bool]:
    """(version, name, port, running) of the first PostgreSQL cluster, created when there is none."""
    def first():
        rows = [line.split() for line in run(['pg_lsclusters', '--no-header']).stdout.splitlines() if line.strip()]
        return rows[0] if rows else None

    row = first()
    if row is None:
        version = sorted(p.name for p in pathlib.Path('/usr/lib/postgresql').iterdir())[-1]
        run(_as_root(['pg_createcluster', version, 'main']))
        row = first()
    return row[0], row[1], int(row[2]), row[3] == 'online'


def start_postgres() -> int:
    """Install and start PostgreSQL listening on 127.0.0.1 only; returns its port."""
    ensure_packages(['postgresql'])
    version, name, port, running = _postgres_cluster()
    conf = pathlib.Path('/etc/postgresql') / version / name / 'conf.d' / 'mlresponse.conf'
    changed = write_config(conf, f"{MARKER}: loopback only\nlisten_addresses = '{LOOPBACK}'\n")
    if not running or changed:
        run(_as_root(['pg_ctlcluster', version, name, 'restart' if running else 'start']))
    wait_for(lambda: run(['pg_isready', '-q', '-h', LOOPBACK, '-p', str(port)], check=False).returncode == 0,
             'PostgreSQL')
    return port


def psql(sql: str, port: int) -> str:
    """Run SQL (read from stdin) as the `postgres` superuser over the local socket."""
    command = _as_user('postgres', ['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-p', str(port), '-d', 'postgres'])
    return run(command, stdin=sql).stdout.strip()


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677): the server and its logs never see the password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac('sha256', password.encode(), salt, iterations)
    client_key = hmac.new(salted, b'Client Key', 'sha256').digest()
    server_key = hmac.new(salted, b'Server Key', 'sha256').digest()
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return f'SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}'


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_database(name: str, user: str, password: str, port: int) -> bool:
    """Role `user` (its password set to `password`) owning database `name`; True when the database was created."""
    role_exists = psql(f'SELECT 1 FROM pg_roles WHERE rolname = {_literal(user)}', port) == '1'
    verb = 'ALTER' if role_exists else 'CREATE'
    psql(f'{verb} ROLE {_ident(user)} LOGIN PASSWORD {_literal(scram_verifier(password))}', port)
    if psql(f'SELECT 1 FROM pg_database WHERE datname = {_literal(name)}', port) == '1':
        return False
    psql(f"CREATE DATABASE {_ident(name)} OWNER {_ident(user)} ENCODING 'UTF8' TEMPLATE template0", port)
    return True


def drop_database(name: str, user: str, port: int):
    psql(f'DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)', port)
    psql(f'DROP ROLE IF EXISTS {_ident(user)}', port)


# --- RabbitMQ ---

def rabbitmqctl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run(_as_root(['rabbitmqctl', '-q', *args]), stdin=stdin, check=check, timeout=120)


def start_rabbitmq() -> int:
    """Install and start RabbitMQ, its AMQP port, distribution port and epmd on loopback only; returns the AMQP port."""
    ensure_packages(['rabbitmq-server'])
    blocks = [(pathlib.Path('/etc/rabbitmq/rabbitmq.conf'), RABBITMQ_CONF, False),
              (pathlib.Path('/etc/rabbitmq/rabbitmq-env.conf'), RABBITMQ_ENV, True)]
    missing = [block for block in blocks if not block[0].exists() or block[1] not in block[0].read_text()]
    # `pgrep`, not `rabbitmqctl status`: a node started under another NODENAME (Debian's postinst) counts too.
    running = run(['pgrep', '-u', 'rabbitmq', '-x', 'beam.smp'], check=False).returncode == 0
    if missing and running:
        service('rabbitmq-server', 'stop')  # with the old node name, before rabbitmq-env.conf changes it
        run(['epmd', '-kill'], check=False)  # the port mapper outlives the node, still bound to every interface
        running = False
    for path, text, append in missing:
        write_config(path, text, append=append)
    if not running:
        service('rabbitmq-server', 'start')
    rabbitmqctl('await_startup')
    return RABBITMQ_PORT


def ensure_broker_user(user: str, password: str, vhost: str) -> bool:
    """User `user` (password from stdin) with every permission on `vhost`, and no `guest`; True when created."""
    users = [line.split('\t')[0] for line in rabbitmqctl('list_users').stdout.splitlines()]
    created = user not in users
    rabbitmqctl('add_user' if created else 'change_password', user, stdin=password + '\n')
    if vhost not in rabbitmqctl('list_vhosts').stdout.split():
        rabbitmqctl('add_vhost', vhost)
    rabbitmqctl('set_permissions', '-p', vhost, user, '.*', '.*', '.*')
    if 'guest' in users:  # its password is public
        rabbitmqctl('delete_user', 'guest')
    return created


def drop_broker_user(user: str, vhost: str):
    rabbitmqctl('delete_vhost', vhost, check=False)
    rabbitmqctl('delete_user', user, check=False)


# --- SLURM (one node: slurmctld + slurmd on this machine, munge authentication) ---

SLURM_PARTITION = 'debug'


def slurm_conf(hostname: str, cpus: int, memory_mb: int, partition: str = SLURM_PARTITION) -> str:
    # select/cons_tres with CR_Core: serial jobs share the node one core each. No cgroups (containers lack them).
    # NoCtldInAddrAny/NoInAddrAny: slurmctld and slurmd bind to the address the host name resolves to, not to every
    # interface; `start_slurm` checks that it is loopback.
    return f"""{MARKER}: one node, this machine
ClusterName=mlresponse
SlurmctldHost={hostname}({LOOPBACK})
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={hostname} NodeAddr={LOOPBACK} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={hostname} Default=YES MaxTime=INFINITE State=UP
"""


def _node_state() -> str:
    done = run(['sinfo', '-h', '-N', '-o', '%T'], check=False, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ''


def start_slurm() -> str:
    """Install munge and slurm-wlm, write slurm.conf for this machine, start munged, slurmctld and slurmd; returns
    the partition name once the node is idle or running jobs."""
    ensure_packages(['munge', 'slurm-wlm'])
    import socket

    hostname = socket.gethostname().split('.')[0]
    address = socket.gethostbyname(hostname)
    if not address.startswith('127.'):
        raise ServiceError(f'{hostname} resolves to {address}: slurmctld and slurmd would listen there. Map it to '
                           f'loopback in /etc/hosts (`127.0.1.1 {hostname}`, as Debian does) and run this again.')
    memory_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20 - 1024
    changed = write_config(pathlib.Path('/etc/slurm/slurm.conf'),
                           slurm_conf(hostname, os.cpu_count() or 1, max(memory_mb, 512)))
    for directory in ('/var/lib/slurm/slurmctld', '/var/lib/slurm/slurmd', '/var/log/slurm'):
        run(_as_root(['install', '-d', '-o', 'slurm', '-g', 'slurm', directory]))
    if run(['munge', '-n'], check=False).returncode != 0:
        service('munge', 'start')
        wait_for(lambda: run(['munge', '-n'], check=False).returncode == 0, 'munged')
    for daemon in ('slurmctld', 'slurmd'):
        running = run(['pgrep', '-x', daemon], check=False).returncode == 0
        if changed and running:
            service(daemon, 'restart')
        elif not running:
            service(daemon, 'start')
    wait_for(lambda: _node_state() != '', 'slurmctld', timeout=60)
    if any(state in _node_state() for state in ('down', 'drain')):
        run(_as_root(['scontrol', 'update', f'nodename={hostname}', 'state=resume']), check=False)
    wait_for(lambda: _node_state().rstrip('*') in ('idle', 'mixed', 'allocated'), 'the SLURM node', timeout=60)
    return SLURM_PARTITION


# --- credentials ---

def load_or_create_credentials(path: pathlib.Path, profile: str) -> dict:
    """Database and broker credentials of `profile`, generated once and kept in `path` (mode 600)."""
    import json

    everything = json.loads(path.read_text()) if path.exists() else {}
    if profile not in everything:
        safe = profile.replace('-', '_').lower()
        everything[profile] = {
            'database_name': f'aiida_{safe}', 'database_username': f'aiida_{safe}',
            'database_password': secrets.token_urlsafe(24),
            'broker_username': f'aiida_{safe}', 'broker_password': secrets.token_urlsafe(24),
            'broker_virtual_host': f'aiida_{safe}',
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, 'w') as handle:
            json.dump(everything, handle, indent=1)
    os.chmod(path, 0o600)
    return everything[profile]
