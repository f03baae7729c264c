"""MgRelaxParser through the shared base parser, on hand-made outputs: a run killed at its walltime keeps
its last positions (HIST.nc) for the restart; ABINIT's error and a cut-short output get their codes."""

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import CalcJob

from aiida_mlresponse.abinit.calculations.relax import MgRelaxCalculation as Calc
from aiida_mlresponse.abinit.parsers.relax import MgRelaxParser
from aiida_mlresponse.physics.units import BOHR_TO_ANGSTROM

CELL = np.diag([6.1, 9.9, 9.7])
STEPS = np.array([[[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 2 / 3, 0.5], [0.5, 1 / 6, 0.5]],
                  [[0.002, 0.001, 0.0], [0.502, 0.501, 0.0], [-0.002, 2 / 3 - 0.001, 0.5], [0.498, 1 / 6 - 0.001, 0.5]]])
TRUNCATED_OUTPUT = '.Version 9.6.2 of ABINIT\n== DATASET  1 ==\n--- Iteration: (1/30) Internal Cycle: (1/100)\n'
ERROR_LOG = """
--- !ERROR
src_file: m_gstate.F90
src_line: 1
message: |
    nband is too small
    for this smearing.
...
"""


def hist_file(path, steps=STEPS):
    import netCDF4

    with netCDF4.Dataset(path, 'w') as hist:
        hist.createDimension('time', None)
        hist.createDimension('natom', steps.shape[1])
        hist.createDimension('xyz', 3)
        hist.createVariable('xred', 'f8', ('time', 'natom', 'xyz'))[:] = steps
        hist.createVariable('fcart', 'f8', ('time', 'natom', 'xyz'))[:] = np.zeros_like(steps)
        hist.createVariable('rprimd', 'f8', ('time', 'xyz', 'xyz'))[:] = np.repeat(CELL[None], len(steps), axis=0)
    return path.read_bytes()


@pytest.fixture
def parse(aiida_localhost, tmp_path):
    def _parse(files: dict, exit_status=None):
        node = orm.CalcJobNode(computer=aiida_localhost, process_type='aiida.calculations:mlresponse.abinit.mg_relax')
        node.set_option('resources', {'num_machines': 1})
        parameters = orm.Dict({'ecut': 8.0, 'ngfft': [18, 30, 30], 'tsmear': 0.01}).store()
        node.base.links.add_incoming(parameters, link_type=LinkType.INPUT_CALC, link_label='parameters')
        if exit_status is not None:
            node.set_exit_status(exit_status)
        node.store()
        retrieved = orm.FolderData()
        for name, content in files.items():
            retrieved.base.repository.put_object_from_bytes(content, name)
        retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='retrieved')
        retrieved.store()
        temporary = tmp_path / 'temporary'
        temporary.mkdir(exist_ok=True)
        return MgRelaxParser.parse_from_node(node, store_provenance=False, retrieved_temporary_folder=str(temporary))

    return _parse


@pytest.mark.parametrize('killed_by', ['scheduler', 'cpu_limit'])
def test_killed_at_walltime_keeps_the_last_positions(parse, tmp_path, killed_by):
    files = {'aiida.abo': TRUNCATED_OUTPUT.encode(), Calc.FILES['hist']: hist_file(tmp_path / 'hist.nc')}
    exit_status = None
    if killed_by == 'scheduler':
        exit_status = CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
    else:
        files['_scheduler-stderr.txt'] = b"line 9: 4242 CPU time limit exceeded '/usr/bin/abinit' 'aiida.abi'\n"
    results, process = parse(files, exit_status)
    assert process.exit_status == Calc.exit_codes.ERROR_OUT_OF_WALLTIME.status
    structure = results['output_structure']
    np.testing.assert_allclose([site.position for site in structure.sites], STEPS[-1] @ CELL * BOHR_TO_ANGSTROM,
                               atol=1e-10)


def test_cut_short_without_walltime_is_incomplete_and_keeps_the_positions(parse, tmp_path):
    results, process = parse({'aiida.abo': TRUNCATED_OUTPUT.encode(), Calc.FILES['hist']: hist_file(tmp_path / 'h.nc')})
    assert process.exit_status == Calc.exit_codes.ERROR_OUTPUT_INCOMPLETE.status
    assert 'output_structure' in results


def test_unreadable_history_after_a_kill(parse):
    _, process = parse({'aiida.abo': TRUNCATED_OUTPUT.encode(), Calc.FILES['hist']: b'CDF\x01 cut'},
                       CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status)
    assert process.exit_status == Calc.exit_codes.ERROR_OUT_OF_WALLTIME.status  # restarts from the input structure


def test_abinit_error_message_read_by_the_shared_reader(parse):
    _, process = parse({'aiida.abo': TRUNCATED_OUTPUT.encode(), 'aiida.log': ERROR_LOG.encode()})
    assert process.exit_status == Calc.exit_codes.ERROR_ABINIT.status
    assert 'nband is too small for this smearing. (m_gstate.F90)' in process.exit_message


def test_nothing_written(parse):
    _, process = parse({})
    assert process.exit_status == Calc.exit_codes.ERROR_MISSING_OUTPUT_FILES.status
