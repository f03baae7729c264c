"""Labels of strained Mg: a restarting relaxation and a WorkChain over N deformations.

`MgRelaxBaseWorkChain` (the restarting relaxation) lives in `workflows.restart`.

`MgLabelsWorkChain` relaxes every deformation, a few at a time, and gathers one `DatasetData`
(kind 'mg_strain') from the calculations that succeeded; failed configurations are reported and
left out. The dataset is created by a calcfunction whose inputs are the outputs of every
calculation, so its provenance reaches each ABINIT run.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import WorkChain, calcfunction, while_

from aiida_mlresponse.abinit.mg import mg_structure
from aiida_mlresponse.physics.strain import DeformationError, validate_deformation
from aiida_mlresponse.workflows.restart import MgRelaxBaseWorkChain

FIELD_NAMES = ('rho', 'phi', 'u', 's')


def validate_deformations(value, _):
    try:
        array = value.get_array('deformations')
    except (KeyError, AttributeError):
        return 'the ArrayData needs an array `deformations` of shape (N, 6).'
    if array.ndim != 2 or array.shape[1] != 6 or len(array) < 1:
        return f'`deformations` must have shape (N, 6), got {array.shape}.'
    try:
        validate_deformation(array)
    except DeformationError as exc:
        return str(exc)


class MgLabelsWorkChain(WorkChain):
    """Relax N deformations of the Mg cell and gather one dataset node; failures are left out."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode)
        spec.input('deformations', valid_type=orm.ArrayData, validator=validate_deformations,
                   help='Array `deformations` (N, 6): λa, λb, λc, θa, θb, θc (degrees).')
        spec.input('protocol', valid_type=orm.Str, default=lambda: orm.Str('fast'))
        spec.input('overrides', valid_type=orm.Dict, required=False, help='Deep-merged on the protocol entry.')
        spec.input('max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(1),
                   help='Relaxations running at once (ABINIT processes on the machine).')
        spec.outline(cls.setup, while_(cls.has_next)(cls.run_batch, cls.inspect_batch), cls.gather)
        spec.output('dataset', help='DatasetData (kind mg_strain) of the configurations that succeeded.')
        spec.output('failed', valid_type=orm.Dict, help='index -> exit status and message of every left-out configuration.')
        spec.exit_code(400, 'ERROR_ALL_FAILED', message='Every configuration failed: no dataset.')

    def setup(self):
        self.ctx.deformations = self.inputs.deformations.get_array('deformations')
        self.ctx.next = 0
        self.ctx.succeeded = {}
        self.ctx.failed = {}
        overrides = self.inputs.overrides.get_dict() if 'overrides' in self.inputs else {}
        # Fail early (before any ABINIT run) on a grid or structure the protocol cannot handle.
        for deformation in self.ctx.deformations:
            MgRelaxBaseWorkChain.get_builder_from_protocol(self.inputs.code, deformation=deformation,
                                                           protocol=self.inputs.protocol.value, overrides=overrides)
        self.ctx.overrides = overrides

    def has_next(self):
        return self.ctx.next < len(self.ctx.deformations)

    def run_batch(self):
        stop = min(self.ctx.next + self.inputs.max_concurrent.value, len(self.ctx.deformations))
        for index in range(self.ctx.next, stop):
            builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
                self.inputs.code, deformation=self.ctx.deformations[index],
                protocol=self.inputs.protocol.value, overrides=self.ctx.overrides,
            )
            builder.metadata.call_link_label = f'relax_{index}'
            self.to_context(**{f'relax_{index}': self.submit(builder)})
        self.ctx.batch = list(range(self.ctx.next, stop))
        self.ctx.next = stop

    def inspect_batch(self):
        for index in self.ctx.batch:
            node = self.ctx[f'relax_{index}']
            if node.is_finished_ok and 'fields' in node.outputs:
                self.ctx.succeeded[index] = node
            else:
                self.ctx.failed[str(index)] = {'exit_status': node.exit_status, 'message': node.exit_message, 'pk': node.pk}
                self.report(f'configuration {index} (D = {self.ctx.deformations[index].tolist()}) failed after '
                            f'restarts: {node.exit_status} {node.exit_message}; left out.')

    def gather(self):
        self.out('failed', left_out_configurations(self.inputs.deformations, orm.Dict(self.ctx.failed)))
        if not self.ctx.succeeded:
            return self.exit_codes.ERROR_ALL_FAILED
        kwargs = {}
        for index, node in sorted(self.ctx.succeeded.items()):
            kwargs[f'parameters_{index}'] = node.outputs.output_parameters
            kwargs[f'arrays_{index}'] = node.outputs.output_arrays
            kwargs[f'fields_{index}'] = node.outputs.fields
        dataset = gather_mg_dataset(**kwargs)
        self.out('dataset', dataset)
        self.report(f'dataset<{dataset.pk}>: {len(self.ctx.succeeded)} configurations, {len(self.ctx.failed)} left out.')


@calcfunction
def left_out_configurations(deformations: orm.ArrayData, failures: orm.Dict) -> orm.Dict:
    """index -> D, exit status, message and pk of each configuration left out (a calcfunction for provenance)."""
    array = deformations.get_array('deformations')
    return orm.Dict({index: {**failure, 'deformation': array[int(index)].tolist()}
                     for index, failure in failures.get_dict().items()})


def mg_rows(parameters: list[dict], arrays: list[dict], fields: list[dict]) -> tuple[dict, dict]:
    """Stack per-configuration results into dataset rows (arrays) and their units."""
    rows = {
        'deformation': np.array([a['deformation'] for a in arrays]),
        'free_energy': np.array([p['free_energy'] for p in parameters]),
        'band_energy': np.array([p['band_energy'] for p in parameters]),
        'entropy_energy': np.array([p['entropy_energy'] for p in parameters]),
        'fermi_energy': np.array([p['fermi_energy'] for p in parameters]),
        'volume': np.array([p['volume'] for p in parameters]),
        'stress': np.array([a['stress'] for a in arrays]),
        'R': np.array([a['R'] for a in arrays]),
        'xred': np.array([a['xred'] for a in arrays]),
        'cell': np.array([a['cell'] for a in arrays]),
    }
    for name in FIELD_NAMES:
        rows[name] = np.array([f[name] for f in fields], dtype=np.float32)
    units = {
        'deformation': 'lambda (1) x3, theta (deg) x3', 'free_energy': 'Ha', 'band_energy': 'Ha',
        'entropy_energy': 'Ha (-TS)', 'fermi_energy': 'Ha', 'volume': 'Bohr^3', 'stress': 'Ha/Bohr^3',
        'R': 'reduced', 'xred': 'reduced', 'cell': 'Bohr', 'rho': 'e/Bohr^3', 'phi': 'Ha',
        'u': 'Ha/Bohr^3', 's': '1/Bohr^3',
    }
    return rows, units


@calcfunction
def gather_mg_dataset(**kwargs):
    """One DatasetData from the outputs of every successful relaxation (linked as inputs)."""
    from aiida.plugins import DataFactory

    indices = sorted({int(key.rsplit('_', 1)[1]) for key in kwargs})
    parameters = [kwargs[f'parameters_{i}'].get_dict() for i in indices]
    arrays = [{name: kwargs[f'arrays_{i}'].get_array(name) for name in kwargs[f'arrays_{i}'].get_arraynames()} for i in indices]
    fields = [{name: kwargs[f'fields_{i}'].get_array(name) for name in FIELD_NAMES} for i in indices]
    rows, units = mg_rows(parameters, arrays, fields)
    rows['configuration_index'] = np.array(indices)
    units['configuration_index'] = 'index in the input deformations'
    dataset = DataFactory('mlresponse.dataset')()
    dataset.set_rows('mg_strain', rows, units)
    dataset.base.attributes.set('ngfft', list(fields[0]['rho'].shape))
    return dataset


__all__ = ['MgLabelsWorkChain', 'MgRelaxBaseWorkChain', 'gather_mg_dataset', 'mg_rows', 'mg_structure']
