"""One exit-code table: no status has two meanings across the package's processes."""

from collections import defaultdict

from aiida.plugins.entry_point import get_entry_point_names, load_entry_point

from aiida_mlresponse.abinit.calculations.base import AbinitCalculation
from aiida_mlresponse.abinit.exit_codes import CALCULATION_EXIT_CODES


def package_processes() -> dict:
    """'group:name' -> process class of every `mlresponse.` calculation and work flow entry point."""
    return {
        f'{group}:{name}': load_entry_point(group, name)
        for group in ('aiida.calculations', 'aiida.workflows')
        for name in get_entry_point_names(group) if name.startswith('mlresponse.')
    }


def meanings(processes) -> dict:
    """status -> {label: [processes using it with that label]}."""
    found = defaultdict(lambda: defaultdict(list))
    for name, process in processes.items():
        for label, code in process.spec().exit_codes.items():
            found[code.status][label].append(name)
    return found


def test_the_package_registers_its_abinit_jobs_and_restart_work_chains():
    names = set(package_processes())
    assert {'aiida.calculations:mlresponse.abinit.response', 'aiida.calculations:mlresponse.abinit.mg_relax',
            'aiida.workflows:mlresponse.abinit.response.base', 'aiida.workflows:mlresponse.abinit.mg_relax.base',
            'aiida.calculations:mlresponse.train'} <= names


def test_no_status_has_two_meanings_across_the_package():
    clashes = {status: dict(labels) for status, labels in meanings(package_processes()).items() if len(labels) > 1}
    assert not clashes, f'exit statuses with more than one label: {clashes}'


def test_every_abinit_job_has_the_whole_table():
    table = {label: status for status, label, _, _ in CALCULATION_EXIT_CODES}
    for name, process in package_processes().items():
        if isinstance(process, type) and issubclass(process, AbinitCalculation):
            codes = {label: code.status for label, code in process.spec().exit_codes.items()}
            assert table.items() <= codes.items(), name


def test_no_label_shadows_an_aiida_core_code():
    """A label of aiida-core's own (e.g. ERROR_INVALID_OUTPUT = 10, which the engine itself returns) keeps
    its number: redefining it would make the engine report the package's code instead."""
    from aiida.engine import BaseRestartWorkChain, CalcJob

    core = {label: code.status for process in (CalcJob, BaseRestartWorkChain)
            for label, code in process.spec().exit_codes.items()}
    for name, process in package_processes().items():
        for label, code in process.spec().exit_codes.items():
            if label in core:
                assert code.status == core[label], f'{name}: {label} is {code.status}, aiida-core has {core[label]}'
