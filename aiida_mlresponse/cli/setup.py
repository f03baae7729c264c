"""`aiida-mlresponse setup`: profile, computer, ABINIT codes and pseudo families, idempotently."""

from __future__ import annotations

import shutil
import subprocess
import sys

import click

PROFILE_NAME = 'mlresponse'
CODES = {'abinit': 'mlresponse.abinit.response', 'anaddb': None}
# The Python of this environment runs the training entry point (`TrainingCalculation`).
TRAINING_CODE = 'mlresponse-python'


class SetupError(click.ClickException):
    """A missing prerequisite, reported with what to do about it."""


def find_executables() -> dict[str, str]:
    """Paths of the ABINIT executables and of this Python, or an error telling how to install them."""
    found = {name: shutil.which(name) for name in CODES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SetupError(
            f'ABINIT executable(s) not found on PATH: {", ".join(missing)}. '
            'Install them with `apt-get install -y abinit abinit-data` (Debian) or put them on PATH.'
        )
    found[TRAINING_CODE] = sys.executable
    return found


def ensure_profile(profile_name: str = PROFILE_NAME) -> tuple[str, bool]:
    """Load the default profile, or create `profile_name` with `verdi presto` (SQLite + ZeroMQ)."""
    from aiida import load_profile
    from aiida.common.exceptions import MissingConfigurationError, ProfileConfigurationError
    from aiida.manage.configuration import get_config

    try:
        config = get_config(create=True)
        if config.default_profile_name:
            profile = load_profile(allow_switch=True)
            return profile.name, False
    except (MissingConfigurationError, ProfileConfigurationError):
        pass
    verdi = shutil.which('verdi') or str(pathlib_parent_bin() / 'verdi')
    subprocess.run(
        [verdi, 'presto', '--profile-name', profile_name, '--use-zeromq', '--non-interactive'], check=True
    )
    from aiida.manage.configuration import reset_config

    reset_config()
    profile = load_profile(profile_name, allow_switch=True)
    return profile.name, True


def pathlib_parent_bin():
    import pathlib

    return pathlib.Path(sys.executable).parent


def ensure_computer():
    """The `localhost` computer (created by presto; created here for profiles made otherwise)."""
    computer, created = ensure_local_computer('localhost', 'this machine', 'core.direct', 'aiida_run')
    # presto polls localhost every second; each poll costs the daemon ~20 ms per running job, most of its CPU for a
    # `fast` label (4.7 CPU s a job at 1 s, 2.0 at 5 s, measured in-process); labels take tens of seconds or more.
    computer.set_minimum_job_poll_interval(max(computer.get_minimum_job_poll_interval() or 0, 5.0))
    return computer, created


def ensure_local_computer(label: str, description: str, scheduler_type: str, workdir_name: str):
    """A computer on this machine (`core.local` transport), loaded or created, configured for the default user,
    without the login shell and with serial jobs. Returns (computer, created)."""
    import tempfile

    from aiida import orm
    from aiida.common.exceptions import NotExistent

    try:
        computer, created = orm.load_computer(label), False
    except NotExistent:
        computer = orm.Computer(
            label=label, hostname='localhost', description=description, transport_type='core.local',
            scheduler_type=scheduler_type, workdir=f'{tempfile.gettempdir()}/{workdir_name}',
        ).store()
        created = True
    if not computer.is_configured:
        computer.configure()
    without_login_shell(computer)
    # Serial ABINIT jobs: on a small machine several serial runs beat one MPI run.
    computer.set_default_mpiprocs_per_machine(1)
    return computer, created


def without_login_shell(computer) -> bool:
    """Run this machine's transport commands (each submission and each scheduler poll) in a plain shell: AiiDA's
    default login shell reads the user's start-up files every time, 1.2 s a command on this machine (`pyenv init` in
    .bashrc) against 0.05 s, and nothing here needs them (the codes are absolute paths, `find_executables`). The other
    authentication parameters are kept. Returns whether it changed anything."""
    from aiida import orm

    authinfo = computer.get_authinfo(orm.User.collection.get_default())
    params = authinfo.get_auth_params()
    if params.get('use_login_shell', True) is False:
        return False
    authinfo.set_auth_params({**params, 'use_login_shell': False})
    return True


def ensure_codes(computer, executables: dict[str, str]) -> list[tuple[str, bool]]:
    """InstalledCode `abinit@localhost` and `anaddb@localhost`; existing ones are kept."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    results = []
    for name, plugin in {**CODES, TRAINING_CODE: 'mlresponse.train'}.items():
        label = f'{name}@{computer.label}'
        try:
            orm.load_code(label)
            results.append((label, False))
            continue
        except NotExistent:
            pass
        code = orm.InstalledCode(
            label=name,
            computer=computer,
            filepath_executable=executables[name],
            default_calc_job_plugin=plugin,
            description=f'{name} from {executables[name]}' if name == TRAINING_CODE
            else f'{name} {abinit_version(executables["abinit"])} from {executables[name]}',
        )
        code.store()
        results.append((label, True))
    return results


def abinit_version(executable: str) -> str:
    try:
        return subprocess.run([executable, '--version'], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown version'


def run_setup(echo=click.echo, profile_step=None) -> dict:
    """Do every set-up step; a second run changes nothing. Returns what was created.
    `profile_step` returns (profile name, created) in place of `ensure_profile` (the production profile)."""
    from aiida_mlresponse.abinit.pseudos import PseudoSetupError, family_source_files, FAMILIES, install_families

    executables = find_executables()
    try:
        for label in FAMILIES:
            family_source_files(label)
    except PseudoSetupError as exc:
        raise SetupError(str(exc)) from exc
    profile, created = (profile_step or ensure_profile)()
    echo(f'profile   {profile:50s} {"created" if created else "exists"}')
    computer, created = ensure_computer()
    echo(f'computer  {computer.label:50s} {"created" if created else "exists"}')
    changes = {'profile': created}
    for label, created in ensure_codes(computer, executables):
        echo(f'code      {label:50s} {"created" if created else "exists"}')
        changes[label] = created
    for label, created in install_families():
        echo(f'pseudos   {label:50s} {"created" if created else "exists"}')
        changes[label] = created
    # The Mg seed's own pseudopotential (pspcod 5) for the `precise` Mg protocol, where its file is.
    from aiida_mlresponse.abinit.mg import SEED_FAMILY_LABEL, SEED_MG_PSEUDO, install_seed_family

    if SEED_MG_PSEUDO.is_file():
        _, created = install_seed_family()
        echo(f'pseudos   {SEED_FAMILY_LABEL:50s} {"created" if created else "exists"}')
        changes[SEED_FAMILY_LABEL] = created
    else:
        echo(f'pseudos   {SEED_FAMILY_LABEL:50s} skipped: {SEED_MG_PSEUDO} not found (only the precise Mg protocol needs it)')
    return changes
