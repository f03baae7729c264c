"""Live restarts of a relaxation from its last positions: killed at its walltime (direct scheduler), and not converged."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STRAINED = [1.04, 0.97, 1.02, 87.0, 93.0, 91.0]
KILL_AFTER_CPU_SECONDS = 4  # the test relaxation needs more; the first BFGS steps fit


def test_relaxation_killed_at_walltime_continues_from_its_last_positions(aiida_profile, abinit_code, pseudo_families):
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

    builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
        abinit_code, deformation=STRAINED, protocol='test', options={'max_wallclock_seconds': KILL_AFTER_CPU_SECONDS})
    results, node = run_get_node(builder)
    calculations = sorted(node.called, key=lambda n: n.ctime)
    assert len(calculations) >= 2
    first, second = calculations[0], calculations[1]
    # Killed for real: the CPU-time limit (ulimit -t) stops ABINIT, the parser reports the walltime code.
    assert f'ulimit -S -t {KILL_AFTER_CPU_SECONDS}' in first.base.repository.get_object_content('_aiidasubmit.sh')
    assert first.exit_status == first.process_class.exit_codes.ERROR_OUT_OF_WALLTIME.status, first.exit_message
    killed_at = first.outputs.output_structure
    start = first.inputs.structure
    moved = np.abs(np.array([s.position for s in killed_at.sites]) - np.array([s.position for s in start.sites])).max()
    assert moved > 1e-4  # the kill came mid-relaxation, after BFGS had moved the atoms
    # The restart starts from those positions with twice the time (each later kill likewise), and finishes.
    assert second.inputs.structure.pk == killed_at.pk
    for before, after in zip(calculations, calculations[1:]):
        assert after.inputs.structure.pk == before.outputs.output_structure.pk
        assert after.get_option('max_wallclock_seconds') == 2 * before.get_option('max_wallclock_seconds')
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert calculations[-1].is_finished_ok and results['output_parameters']['relaxation_steps'] >= 1
    assert results['output_parameters']['max_force'] < builder.abinit.parameters['tolmxf']


@pytest.mark.slow
def test_unconverged_relaxation_continues_from_its_last_positions(aiida_profile, abinit_code, pseudo_families):
    from aiida.engine import run_get_node

    from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

    builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
        abinit_code, deformation=STRAINED, protocol='test', overrides={'parameters': {'ntime': 3}, 'max_iterations': 3})
    results, node = run_get_node(builder)
    calculations = sorted(node.called, key=lambda n: n.ctime)
    assert node.is_finished_ok, node.exit_status
    assert calculations[0].exit_status == 420  # relaxation not converged in 3 BFGS steps
    second = calculations[1]
    # the restart starts where the first stopped, with more steps
    assert second.inputs.structure.pk == calculations[0].outputs.output_structure.pk
    assert second.inputs.parameters['ntime'] > 3
    assert results['output_parameters']['symmetric_form_deviation'] < 1e-6
