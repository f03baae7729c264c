"""A dataset remade from cached ABINIT runs (other uuids, same labels) hashes the same, so its training is cached."""

import numpy as np


def dataset(calculations, polarization=0.0):
    from aiida_mlresponse.data.dataset import DatasetData

    node = DatasetData()
    node.set_rows('response', {'positions': np.zeros((1, 2, 3)), 'cells': np.eye(3)[None],
                               'polarization': np.full((1, 3), polarization), 'dielectric_tensor': np.eye(3)[None],
                               'configuration_index': [0]})
    node.base.attributes.set('calculations', calculations)
    return node.store()


def test_the_hash_ignores_the_uuids_of_the_calculations_not_the_labels(aiida_profile):
    first = dataset(['uuid-of-a-run'])
    assert dataset(['uuid-of-its-cached-copy']).base.caching.get_hash() == first.base.caching.get_hash()
    assert dataset(['uuid-of-a-run'], polarization=0.1).base.caching.get_hash() != first.base.caching.get_hash()
