"""Model files written before ml/ was split by family (commit be6ea65, format version 2, and the same as
version 1) load with today's code, under the kinds they were saved with, and predict what they predicted then."""

import pathlib

import numpy as np
import pytest
import torch

from aiida_mlresponse.ml import checkpoint

DATA = pathlib.Path(__file__).parent / 'data'


@pytest.fixture(scope='module')
def expected():
    return torch.load(DATA / 'outputs_v2.pt', weights_only=True)


def _as_version_1(path, tmp_path):
    """The same file in the layout of version 1 (the state dict itself instead of the packed state)."""
    payload = checkpoint.read(path)
    old = tmp_path / f'v1_{path.name}'
    torch.save(dict(payload, version=1), old)
    return old


@pytest.mark.parametrize('version', [2, 1])
def test_radnet_file(expected, tmp_path, version):
    path = DATA / 'radnet_v2.pt'
    model, payload = checkpoint.load(path if version == 2 else _as_version_1(path, tmp_path))
    assert payload['kind'] == 'radnet' and type(model).__name__ == 'RadNet'
    with torch.no_grad():
        torch.testing.assert_close(model(expected['radnet_cubes']), expected['radnet'], rtol=0, atol=0)


@pytest.mark.parametrize('version', [2, 1])
def test_radnet_committee_file(expected, tmp_path, version):
    path = DATA / 'radnet_committee_v2.pt'
    model, payload = checkpoint.load(path if version == 2 else _as_version_1(path, tmp_path))
    assert payload['kind'] == 'radnet_committee' and type(model).__name__ == 'Committee'
    cubes = torch.rand(3, 2, 1, 5, 5, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(cubes, expected['committee_positions']), expected['radnet_committee'],
                                   rtol=0, atol=0)


@pytest.mark.parametrize('version', [2, 1])
def test_pcamlp_file(expected, tmp_path, version):
    path = DATA / 'pcamlp_v2.pt'
    model, payload = checkpoint.load(path if version == 2 else _as_version_1(path, tmp_path))
    assert payload['kind'] == 'pcamlp' and type(model).__name__ == 'PCAMLPCommittee'
    assert set(payload['curves']) == {'scalars', 'fields'}
    prediction = model.predict(expected['pcamlp_D'].numpy())
    names = {key.removeprefix('pcamlp_') for key in expected if key.startswith('pcamlp_')} - {'D'}
    assert set(prediction) == names
    for name in names:
        np.testing.assert_array_equal(prediction[name], expected[f'pcamlp_{name}'].numpy(), err_msg=name)


def test_numpy_scalars_in_metadata_are_saved_as_plain_numbers(tmp_path):
    """np.float64 passes json.dumps but pickles as a numpy object, which weights-only loading refuses."""
    import numpy as np

    from aiida_mlresponse.ml import checkpoint
    from aiida_mlresponse.ml.pcamlp.model import build, default_hyperparameters

    model = build(default_hyperparameters(field_shape=[2, 2, 2], fields=[], pca_dims={}))
    path = checkpoint.save(tmp_path / 'm.pt', model, metadata={'weight': np.float64(0.5), 'n': 3})
    payload = checkpoint.read(path)
    assert payload['metadata'] == {'weight': 0.5, 'n': 3} and type(payload['metadata']['weight']) is float
