"""Label a set of displaced structures with ABINIT and gather them into one `DatasetData` node."""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, while_

from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays
from aiida_mlresponse.data.dataset import DatasetData
from aiida_mlresponse.sampling.displacements import sample_displacements
from aiida_mlresponse.workflows.base import AbinitResponseBaseWorkChain

# Arrays of the ABINIT response parser that go into the dataset, with their units.
LABELS = {'polarization': 'e/bohr^2', 'dielectric_tensor': 'dimensionless'}


@calcfunction
def sample_displaced_structures(structure, sigma, count, seed, freeze_z):
    """`count` copies of `structure` with every atom displaced by N(0, σ²) (σ in Å), seeded."""
    cell, positions, symbols, _ = structure_to_arrays(structure)
    displaced = sample_displacements(positions, sigma.value, count.value, seed.value, freeze_z.value)
    return {f'structure_{index:04d}': structure_from_arrays(cell, pos, symbols) for index, pos in enumerate(displaced)}


@calcfunction
def collect_response_dataset(**labelled):
    """One DatasetData from pairs `structure_NNNN` / `arrays_NNNN` (parser outputs), in index order."""
    indices = sorted(key.split('_', 1)[1] for key in labelled if key.startswith('structure_'))
    rows = {'positions': [], 'cells': []}
    rows.update({name: [] for name in LABELS})
    for index in indices:
        cell, positions, _, _ = structure_to_arrays(labelled[f'structure_{index}'])
        rows['positions'].append(positions)
        rows['cells'].append(cell)
        for name in LABELS:
            rows[name].append(labelled[f'arrays_{index}'].get_array(name))
    dataset = DatasetData()
    # Row -> the CalcJob that produced it (the provenance graph has the same, this is for display).
    dataset.base.attributes.set('calculations', [labelled[f'arrays_{index}'].creator.uuid for index in indices])
    _, _, symbols, _ = structure_to_arrays(labelled[f'structure_{indices[0]}'])
    dataset.base.attributes.set('symbols', symbols)
    dataset.base.attributes.set('atomic_numbers', [int(atomic_numbers[symbol]) for symbol in symbols])
    dataset.set_rows(
        'response',
        {name: np.asarray(value) for name, value in rows.items()},
        {'positions': 'angstrom', 'cells': 'angstrom', **LABELS},
    )
    return dataset


def validate_sigma(value, _):
    if value is not None and not value.value > 0:
        return f'the displacement width σ must be positive, got {value.value} Å.'


def validate_count(value, _):
    if value is not None and value.value < 1:
        return f'`count` must be at least 1, got {value.value}.'


class DisplacementLabelsWorkChain(WorkChain):
    """Sample displaced structures, label each with `AbinitResponseBaseWorkChain`, gather a dataset.

    The undisplaced reference is labelled first: its polarization fixes the Berry-phase branch of
    every displaced configuration. At most `max_concurrent` ABINIT jobs run at once (on a small
    machine several serial jobs beat one MPI job, but not more jobs than cores). A configuration
    that still fails after the restart handlers is reported and left out; the rest are kept.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(AbinitResponseBaseWorkChain, namespace='labelling', exclude=('abinit.structure',))
        spec.input('structure', valid_type=orm.StructureData, help='The reference (equilibrium) structure.')
        spec.input('sigma', valid_type=orm.Float, validator=validate_sigma, help='Displacement width σ in Å.')
        spec.input('count', valid_type=orm.Int, validator=validate_count, help='Number of displaced structures.')
        spec.input('seed', valid_type=orm.Int, default=lambda: orm.Int(0))
        spec.input('freeze_z', valid_type=orm.Bool, default=lambda: orm.Bool(False))
        spec.input('max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(2))
        spec.input('min_success_fraction', valid_type=orm.Float, default=lambda: orm.Float(0.5),
                   help='Fail when fewer configurations than this fraction were labelled.')
        spec.outline(
            cls.sample,
            cls.run_reference,
            cls.inspect_reference,
            while_(cls.should_submit)(cls.submit_batch, cls.inspect_batch),
            cls.collect,
        )
        spec.output('dataset', valid_type=DatasetData, help='Positions, cells, P (branch fixed) and ε∞ of every labelled configuration.')
        spec.output('reference_arrays', valid_type=orm.ArrayData, help='Labels of the undisplaced reference.')
        spec.exit_code(401, 'ERROR_REFERENCE_FAILED', message='The reference structure could not be labelled: {message}')
        spec.exit_code(402, 'ERROR_TOO_MANY_FAILURES', message='Only {done} of {total} configurations were labelled.')

    @classmethod
    def get_builder_from_protocol(cls, code, structure, protocol='fast', sigma=0.01, count=10, seed=0,
                                  freeze_z=False, overrides=None, **kwargs):
        """A builder with every ABINIT input from `protocol` (test, fast, moderate, precise)."""
        sub = AbinitResponseBaseWorkChain.get_builder_from_protocol(code, structure, protocol=protocol, overrides=overrides, **kwargs)
        builder = cls.get_builder()
        for key, value in sub._inputs(prune=True).items():
            if key == 'metadata':
                continue
            if key == 'abinit':
                value = {k: v for k, v in value.items() if k != 'structure'}
            builder.labelling[key] = value
        builder.structure = structure
        builder.sigma = orm.Float(sigma)
        builder.count = orm.Int(count)
        builder.seed = orm.Int(seed)
        builder.freeze_z = orm.Bool(freeze_z)
        return builder

    def _labelling_inputs(self, structure):
        inputs = self.exposed_inputs(AbinitResponseBaseWorkChain, namespace='labelling')
        inputs['abinit']['structure'] = structure
        return inputs

    def sample(self):
        outputs = sample_displaced_structures(
            self.inputs.structure, self.inputs.sigma, self.inputs.count, self.inputs.seed, self.inputs.freeze_z
        )
        self.ctx.pending = sorted(outputs.items())
        self.ctx.structures = dict(outputs)
        self.ctx.labelled = {}
        self.report(f'sampled {len(outputs)} displaced structures (σ = {self.inputs.sigma.value} Å)')

    def run_reference(self):
        node = self.submit(AbinitResponseBaseWorkChain, **self._labelling_inputs(self.inputs.structure))
        self.report(f'labelling the reference structure: {node.process_label}<{node.pk}>')
        return ToContext(reference=node)

    def inspect_reference(self):
        node = self.ctx.reference
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_REFERENCE_FAILED.format(message=f'{node.process_label}<{node.pk}> exit status {node.exit_status}')
        self.out('reference_arrays', node.outputs.output_arrays)

    def should_submit(self):
        return bool(self.ctx.pending)

    def submit_batch(self):
        batch, self.ctx.pending = self.ctx.pending[: self.inputs.max_concurrent.value], self.ctx.pending[self.inputs.max_concurrent.value :]
        futures = {}
        for key, structure in batch:
            inputs = self._labelling_inputs(structure)
            inputs['abinit']['reference_polarization'] = self.ctx.reference.outputs.output_arrays
            node = self.submit(AbinitResponseBaseWorkChain, **inputs)
            futures[key] = node
        self.report(f'submitted {", ".join(f"{k}: <{n.pk}>" for k, n in futures.items())}; {len(self.ctx.pending)} left')
        return ToContext(**{f'batch_{key}': node for key, node in futures.items()})

    def inspect_batch(self):
        for key in [k for k in self.ctx if k.startswith('batch_structure_')]:
            node = self.ctx[key]
            structure_key = key[len('batch_'):]
            if node.is_finished_ok:
                self.ctx.labelled[structure_key] = node.outputs.output_arrays
            else:
                self.report(f'{structure_key} left out: {node.process_label}<{node.pk}> failed with exit status {node.exit_status}')
            del self.ctx[key]

    def collect(self):
        total, done = len(self.ctx.structures), len(self.ctx.labelled)
        if done == 0 or done < self.inputs.min_success_fraction.value * total:
            return self.exit_codes.ERROR_TOO_MANY_FAILURES.format(done=done, total=total)
        inputs = {}
        for key, arrays in self.ctx.labelled.items():
            index = key.split('_', 1)[1]
            inputs[f'structure_{index}'] = self.ctx.structures[key]
            inputs[f'arrays_{index}'] = arrays
        dataset = collect_response_dataset(**inputs)
        self.out('dataset', dataset)
        self.report(f'dataset <{dataset.pk}>: {done} of {total} configurations labelled')
