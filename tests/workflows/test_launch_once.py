"""A child launched before a daemon kill, and so before its parent's checkpoint, is adopted, not launched again.

A daemon killed between a work chain's submit of a child and the step's end leaves the child stored, called by the
work chain and running, while the restarted work chain, back at its last checkpoint, knows nothing of it. These
tests build that state without a kill: a subclass launches the child one step early, keeping it out of the context,
exactly as the lost step had; the launch step that follows must find it and wait on it.
"""

import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import BaseRestartWorkChain, WorkChain, run_get_node

from aiida_mlresponse.workflows.labels import LabelsWorkChain, sample_displacement_configurations
from aiida_mlresponse.workflows.launch import called_by_label, submit_once
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain


class Child(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('x', valid_type=orm.Int)
        spec.output('y', valid_type=orm.Int)
        spec.outline(cls.double)

    def double(self):
        self.out('y', orm.Int(2 * self.inputs.x.value).store())


class LaunchesTwice(WorkChain):
    """`early` submits child `a` as a killed step would have (not in the context); `launch` asks for `a` and `b`."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.early, cls.launch, cls.check)
        spec.output('total', valid_type=orm.Int)

    def _builder(self, x):
        builder = Child.get_builder()
        builder.x = orm.Int(x)
        return builder

    def early(self):
        builder = self._builder(1)
        builder.metadata.call_link_label = 'a'
        self.ctx.early_pk = self.submit(builder).pk

    def launch(self):
        self.ctx.adopted_pk = submit_once(self, self._builder(1), 'a').pk
        return self.to_context(a=orm.load_node(self.ctx.adopted_pk), b=submit_once(self, self._builder(5), 'b'))

    def check(self):
        assert self.ctx.adopted_pk == self.ctx.early_pk
        self.out('total', orm.Int(self.ctx.a.outputs.y.value + self.ctx.b.outputs.y.value).store())


def test_submit_once_adopts_a_child_already_called_under_its_label(aiida_profile):
    from aiida.common.log import configure_logging

    configure_logging(with_orm=True)  # reports into the database (an in-process CLI test earlier may have turned that off)
    results, node = run_get_node(LaunchesTwice)
    assert node.is_finished_ok, node.exit_message
    assert results['total'].value == 12
    assert sorted(link.link_label for link in node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()) == ['a', 'b']
    logs = ' '.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert 'launched as `a` before the last checkpoint' in logs


class LabelsLaunchedBeforeRestart(LabelsWorkChain):
    """The reference's labeller launched in `setup`, configuration 0's in `inspect_reference`: each one step before
    the step that launches it, as a daemon kill inside that step leaves them."""

    def setup(self):
        super().setup()
        builder = self._builder(self.inputs.reference)
        builder.metadata.call_link_label = 'reference'
        self.node.base.extras.set('early', [self.submit(builder).pk])

    def inspect_reference(self):
        result = super().inspect_reference()
        builder = self._builder(self._structure_for(0), {'reference_polarization': self._reference_arrays()})
        builder.metadata.call_link_label = f'label_{self.ctx.indices[0]}'
        self.node.base.extras.set('early', self.node.base.extras.get('early') + [self.submit(builder).pk])
        return result


@pytest.mark.slow
def test_labels_work_chain_runs_abinit_once_per_configuration(abinit_code, pseudo_families, bn_structure):
    configurations = sample_displacement_configurations(bn_structure, orm.Float(0.01), orm.Int(2), orm.Int(5))
    builder = LabelsLaunchedBeforeRestart.get_builder_from_protocol(
        abinit_code, configurations, 'response', reference=bn_structure, protocol='test')
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert results['dataset'].size == 2 and results['failed'].get_dict() == {}

    labellers = {link.link_label: link.node for link in node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()}
    assert sorted(labellers) == ['label_0', 'label_1', 'reference']  # three labellers for three structures
    calcjobs = [n for n in node.called_descendants if isinstance(n, orm.CalcJobNode)]
    assert len(calcjobs) == 3, [c.pk for c in calcjobs]  # one ABINIT run per structure
    # the children launched early are the ones whose labels the dataset holds
    assert [labellers['reference'].pk, labellers['label_0'].pk] == node.base.extras.get('early')
    calculations = set(results['dataset'].base.attributes.get('calculations'))
    early_calc = [c for c in labellers['label_0'].called if isinstance(c, orm.CalcJobNode)][0]
    assert early_calc.uuid in calculations


class RestartLaunchedBeforeRestart(AbinitResponseBaseWorkChain):
    """The first CalcJob launched in `setup` by aiida-core's own `run_process`, one step early, and the iteration
    count and handler extra put back to before it, as a daemon kill inside `run_process` leaves them."""

    def setup(self):
        super().setup()
        BaseRestartWorkChain.run_process(self)
        self.ctx.iteration = 0
        self.node.base.extras.delete(self._considered_handlers_extra)
        self.node.base.extras.set('early', called_by_label(self)['iteration_01'].pk)


@pytest.mark.slow
def test_restart_work_chain_runs_its_calcjob_once(abinit_code, pseudo_families, bn_structure):
    builder = RestartLaunchedBeforeRestart.get_builder_from_protocol(abinit_code, bn_structure, protocol='test')
    _, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    calcjobs = node.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all()
    assert [(link.link_label, link.node.pk) for link in calcjobs] == [('iteration_01', node.base.extras.get('early'))]
    assert calcjobs[0].node.is_finished_ok and node.outputs.output_arrays.uuid == calcjobs[0].node.outputs.output_arrays.uuid
