"""The ABINIT CalcJob tests dry-run their jobs; AiiDA writes a dry run's folder under `./submit_test`, so each test
runs in its own temporary folder instead of the checkout."""

import pytest


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
