# Two entry points (see README): `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: system venv setup demo test test-fast benchmarks clean

system:  ## ABINIT 9.6 and its pseudopotentials from Debian
	@command -v abinit >/dev/null && [ -d /usr/share/abinit/psp/Pseudodojo_nc_sr_04_pw_standard_psp8 ] || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq abinit abinit-data )

# torch is pinned to the 2.13.0 CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@python3 -c 'import ensurepip, venv' 2>/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv )
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[tests]"
	touch $@

venv: $(VENV)/.installed

setup: system venv  ## AiiDA profile (SQLite + ZeroMQ), localhost codes, pseudo families
	$(VENV)/bin/aiida-mlresponse setup

demo: setup  ## the main job: BN active-learning campaign, then its Raman spectrum against DFT (about 25 min)
	$(VENV)/bin/verdi run workchains/run_bn_raman_campaign.py

test: system venv  ## the whole suite (real ABINIT, real training, temporary AiiDA profiles)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: system venv
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

.PHONY: production production-slurm test-production test-faults

production: system venv  ## PostgreSQL + RabbitMQ profile (loopback only, generated passwords), localhost codes, pseudos
	$(VENV)/bin/aiida-mlresponse setup --production

production-slurm: system venv  ## the same, plus a one-node SLURM cluster (munge, slurmctld, slurmd) and computer localhost-slurm
	$(VENV)/bin/aiida-mlresponse setup --production --slurm

test-production: system venv  ## only the tests that start PostgreSQL, RabbitMQ and SLURM
	$(PY) -m pytest -q -m production $(PYTEST_ARGS)

test-faults: system venv  ## faults on the production stack (daemon SIGKILL, PostgreSQL or RabbitMQ restart, SLURM walltime kill, corrupt pseudopotential: ~2-3 min each), counts into benchmarks/results/production.json
	MLRESPONSE_FAULT_TESTS=1 MLRESPONSE_RESULTS=benchmarks/results/production.json \
	  $(PY) -m pytest -q -s -k "service_restart or walltime or corrupt or sigkill" tests/production $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
