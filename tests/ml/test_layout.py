"""ml/ runs without aiida (the training entry point runs on nodes without a profile), and the registry of model
kinds is the one table its readers use."""

import pathlib
import subprocess
import sys

import pytest

from aiida_mlresponse.ml import registry

ML = pathlib.Path(__file__).resolve().parents[2] / 'aiida_mlresponse' / 'ml'


def test_importing_every_ml_module_loads_no_aiida():
    modules = sorted('aiida_mlresponse.' + '.'.join(path.relative_to(ML.parent).with_suffix('').parts)
                     for path in ML.rglob('*.py'))
    script = ('import sys\n' + ''.join(f'import {m.removesuffix(".__init__")}\n' for m in modules)
              + 'print(sorted(m for m in sys.modules if m == "aiida" or m.startswith("aiida.")))')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '[]'


def test_registry_kinds_resolve():
    assert sorted(registry.KINDS) == ['pcamlp', 'radnet', 'radnet_committee']
    assert registry.trainable_kinds() == ['pcamlp', 'radnet']
    for kind in registry.KINDS:
        assert callable(registry.builder(kind))
    for kind in registry.trainable_kinds():
        assert callable(registry.trainer(kind))
        assert registry.KINDS[kind].training.writes in registry.KINDS
    assert callable(registry.predictor('radnet_committee'))
    with pytest.raises(ValueError, match='does not predict structures; kinds that do: radnet_committee'):
        registry.predictor('pcamlp')


def test_training_checks_name_the_problem():
    with pytest.raises(ValueError, match='unknown model kind `schnet`; known kinds: pcamlp, radnet'):
        registry.check_training('schnet')
    with pytest.raises(ValueError, match='a `pcamlp` model trains on a `mg_strain` dataset, got a `response`'):
        registry.check_training('pcamlp', 'response', ['positions'])
    with pytest.raises(ValueError, match=r"lacks the arrays \['cells'\]"):
        registry.check_training('radnet', 'response', ['positions', 'polarization'])
    with pytest.raises(ValueError, match='no `dielectric_tensor` array for target `dielectric`'):
        registry.check_training('radnet', 'response', ['positions', 'cells', 'polarization'], {'target': 'dielectric'})
    registry.check_training('radnet', 'response', ['positions', 'cells', 'polarization'])
