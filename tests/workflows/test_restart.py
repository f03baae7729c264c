"""Handler decisions of the ABINIT restart work chains, without ABINIT: fake finished CalcJob nodes carry
each exit code (the pattern of aiida-quantumespresso's `generate_workchain` tests)."""

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import CalcJob
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from plumpy import ProcessState

from aiida_mlresponse.abinit.calculations.base import AbinitCalculation
from aiida_mlresponse.abinit.mg import mg_structure
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain

CODES = AbinitCalculation.exit_codes
SCHEDULER_WALLTIME = CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
STRAINED = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]


@pytest.fixture
def relax_builder(abinit_code, pseudo_families):
    return MgRelaxBaseWorkChain.get_builder_from_protocol(abinit_code, deformation=STRAINED, protocol='test')


@pytest.fixture
def response_builder(abinit_code, bn_structure, pseudo_families):
    return AbinitResponseBaseWorkChain.get_builder_from_protocol(abinit_code, bn_structure, protocol='test')


def finished_calculation(builder, exit_status: int, outputs=None):
    """A stored CalcJobNode of the builder's CalcJob, finished with `exit_status` and the given outputs."""
    node = orm.CalcJobNode(computer=builder.abinit.code.computer)
    node.set_process_label(builder.process_class._process_class.__name__)
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(exit_status)
    node.set_exit_message(f'fake exit status {exit_status}')
    node.store()
    for label, output in (outputs or {}).items():
        output.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label=label)
        output.store()
    return node


def inspect(builder, node):
    """The work chain after its first child `node` finished: (process, what inspect_process returned)."""
    process = instantiate_process(get_manager().get_runner(), builder)
    process.setup()
    process.ctx.iteration = 1
    process.ctx.children = [node]
    return process, process.inspect_process()


def restarted(process, result) -> bool:
    """A handler dealt with the failure and the work chain runs the calculation again."""
    return (result is None or result.status == 0) and not process.ctx.is_finished


def last_positions():
    """A relaxed-looking structure: the Mg cell with R moved off zero (what a killed run's HIST held)."""
    return mg_structure(STRAINED, r_params=(0.003, -0.002, 0.001))


@pytest.mark.parametrize('exit_status', [SCHEDULER_WALLTIME, CODES.ERROR_OUT_OF_WALLTIME.status])
def test_relaxation_killed_at_walltime_continues_from_its_last_positions(relax_builder, exit_status):
    """The scheduler's walltime code (120) and the package's (400): twice the walltime, last positions."""
    last = last_positions()
    node = finished_calculation(relax_builder, exit_status, {'output_structure': last})
    process, result = inspect(relax_builder, node)
    assert restarted(process, result)
    assert process.ctx.inputs.structure.pk == last.pk
    factor = MgRelaxBaseWorkChain.defaults.walltime_factor
    assert process.ctx.inputs.metadata.options['max_wallclock_seconds'] == factor * 600
    assert process.ctx.inputs.parameters.get_dict() == relax_builder.abinit.parameters.get_dict()


def test_walltime_without_positions_keeps_the_structure(relax_builder):
    node = finished_calculation(relax_builder, SCHEDULER_WALLTIME)  # killed before the first step ended
    process, result = inspect(relax_builder, node)
    assert restarted(process, result) and process.ctx.inputs.structure.pk == relax_builder.abinit.structure.pk
    assert process.ctx.inputs.metadata.options['max_wallclock_seconds'] == 1200


def test_response_walltime_reruns_with_more_time(response_builder):
    node = finished_calculation(response_builder, SCHEDULER_WALLTIME)
    process, result = inspect(response_builder, node)
    assert restarted(process, result) and process.ctx.inputs.metadata.options['max_wallclock_seconds'] == 1200
    assert process.ctx.inputs.structure.pk == response_builder.abinit.structure.pk


def test_relaxation_not_converged_continues_with_more_steps(relax_builder):
    last = last_positions()
    node = finished_calculation(relax_builder, CODES.ERROR_RELAXATION_NOT_CONVERGED.status, {'output_structure': last})
    process, result = inspect(relax_builder, node)
    assert restarted(process, result)
    assert process.ctx.inputs.parameters['ntime'] == 2 * relax_builder.abinit.parameters['ntime']
    assert process.ctx.inputs.structure.pk == last.pk


@pytest.mark.parametrize('kind', ['response', 'relax'])
def test_scf_not_converged_one_handler_for_both(request, kind):
    builder = request.getfixturevalue(f'{kind}_builder')
    outputs = {'output_structure': last_positions()} if kind == 'relax' else {}
    node = finished_calculation(builder, CODES.ERROR_SCF_NOT_CONVERGED.status, outputs)
    process, result = inspect(builder, node)
    assert restarted(process, result)
    parameters = process.ctx.inputs.parameters.get_dict()
    assert parameters['nstep'] == 2 * builder.abinit.parameters['nstep']
    assert parameters['diemix'] == pytest.approx(0.5)  # ABINIT's 1.0 halved
    if kind == 'relax':
        assert process.ctx.inputs.structure.pk == outputs['output_structure'].pk


def test_scf_mixing_never_below_the_floor(response_builder):
    parameters = response_builder.abinit.parameters.get_dict()
    response_builder.abinit.parameters = orm.Dict({**parameters, 'diemix': 0.15})
    node = finished_calculation(response_builder, CODES.ERROR_SCF_NOT_CONVERGED.status)
    process, _ = inspect(response_builder, node)
    assert process.ctx.inputs.parameters['diemix'] == AbinitResponseBaseWorkChain.defaults.diemix_minimum


def test_handlers_take_their_numbers_from_the_defaults_table(relax_builder, monkeypatch):
    monkeypatch.setitem(MgRelaxBaseWorkChain.defaults, 'walltime_factor', 3)
    monkeypatch.setitem(MgRelaxBaseWorkChain.defaults, 'nstep_factor', 1.5)
    process, _ = inspect(relax_builder, finished_calculation(relax_builder, SCHEDULER_WALLTIME))
    assert process.ctx.inputs.metadata.options['max_wallclock_seconds'] == 1800
    process, _ = inspect(relax_builder, finished_calculation(relax_builder, CODES.ERROR_SCF_NOT_CONVERGED.status))
    assert process.ctx.inputs.parameters['nstep'] == 75


def test_response_not_converged(response_builder):
    node = finished_calculation(response_builder, CODES.ERROR_RESPONSE_NOT_CONVERGED.status)
    process, result = inspect(response_builder, node)
    assert restarted(process, result) and process.ctx.inputs.parameters['nstep'] == 2 * response_builder.abinit.parameters['nstep']


@pytest.mark.parametrize('kind', ['response', 'relax'])
def test_errors_no_restart_can_fix_stop_the_work_chain(request, kind):
    builder = request.getfixturevalue(f'{kind}_builder')
    _, result = inspect(builder, finished_calculation(builder, CODES.ERROR_ABINIT.status))
    assert result.status == 300  # ERROR_UNRECOVERABLE_FAILURE
    # An error no handler knows (output cut short, not by the walltime): aiida-core's unhandled failure.
    _, result = inspect(builder, finished_calculation(builder, CODES.ERROR_OUTPUT_INCOMPLETE.status))
    assert result.status == builder.process_class.exit_codes.ERROR_UNHANDLED_FAILURE.status


def test_every_handler_documented_with_its_own_priority():
    for workchain in (AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain):
        handlers = workchain.get_process_handlers()
        assert {h.__name__ for h in handlers} >= {'handle_scf_not_converged', 'handle_out_of_walltime'}
        assert all(h.__doc__ and h.__doc__.strip() for h in handlers)
        priorities = [h.priority for h in handlers]
        assert len(set(priorities)) == len(priorities)
    assert 'handle_relaxation_not_converged' in {h.__name__ for h in MgRelaxBaseWorkChain.get_process_handlers()}
    assert 'handle_response_not_converged' in {h.__name__ for h in AbinitResponseBaseWorkChain.get_process_handlers()}


def test_finished_calculation_without_remote_folder_gives_its_results(relax_builder):
    """After a daemon hard-kill a CalcJob can finish [0] with its outputs but no `remote_folder`:
    the work chain must return the results, not fail with exit 11 (missing output)."""
    parameters, arrays, retrieved = orm.Dict({'free_energy': -1.0}), orm.ArrayData(), orm.FolderData()
    arrays.set_array('R', np.zeros(3))
    outputs = {'output_parameters': parameters, 'output_arrays': arrays, 'retrieved': retrieved,
               'output_structure': last_positions()}
    process, result = inspect(relax_builder, finished_calculation(relax_builder, 0, outputs))
    assert (result is None or result.status == 0) and process.ctx.is_finished
    process.results()
    assert 'remote_folder' not in process.outputs and 'output_structure' in process.outputs
    assert process.spec().outputs.validate(process.outputs) is None
    assert process.outputs['output_parameters'].pk == parameters.pk
