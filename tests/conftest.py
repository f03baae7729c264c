"""Shared fixtures: a temporary AiiDA profile (aiida.tools.pytest_fixtures), real ABINIT codes, structures."""

from __future__ import annotations

import pathlib
import shutil

import pytest

pytest_plugins = ['aiida.tools.pytest_fixtures']

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared'
RADNET_DATA = SHARED / 'data' / 'radnet'
MG_DATA = SHARED / 'data' / 'ml_mg'
TEST_DATA = pathlib.Path(__file__).parent / 'data'


@pytest.fixture
def one_torch_thread():
    """Small nets on this shared 2-core machine: a second torch thread only spins (10x slower under load)."""
    from aiida_mlresponse.ml.common import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope='session')
def pseudo_families(aiida_profile):
    """The package's pseudo families, installed once per test session from abinit-data."""
    from aiida_mlresponse.abinit.pseudos import install_families

    return install_families()


@pytest.fixture
def abinit_code(aiida_localhost):
    """The real ABINIT executable as an InstalledCode on localhost (serial)."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    executable = shutil.which('abinit')
    if executable is None:
        pytest.fail('abinit is not installed: run `make system` (apt-get install abinit abinit-data).')
    try:
        return orm.load_code('abinit@localhost')
    except NotExistent:
        code = orm.InstalledCode(
            label='abinit', computer=aiida_localhost, filepath_executable=executable,
            default_calc_job_plugin='mlresponse.abinit.response',
        )
        return code.store()


@pytest.fixture
def bn_structure(aiida_profile):
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics.crystals import bn_cubic

    return structure_from_arrays(*bn_cubic())


@pytest.fixture
def gaas_structure(aiida_profile):
    from aiida_mlresponse.data import structure_from_arrays
    from aiida_mlresponse.physics.crystals import gaas

    return structure_from_arrays(*gaas())


@pytest.fixture
def python_code(aiida_localhost):
    """This interpreter (which has the package) as the training code on localhost."""
    import sys

    from aiida import orm

    return orm.InstalledCode(label='mlresponse-python', computer=aiida_localhost,
                             filepath_executable=sys.executable, default_calc_job_plugin='mlresponse.train').store()
