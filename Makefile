# msgstatus: `make run` and `make test` are all a newcomer needs (README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFRA := $(PY) deploy/local/infra.py

.PHONY: run test test-unit test-integration lint bench fuzz infra-up infra-down install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "msgstatus needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

infra-up: $(STAMP)
	$(INFRA) up

infra-down: $(STAMP)
	$(INFRA) down

run: $(STAMP)
	bash deploy/local/run.sh

test: $(STAMP)
	$(INFRA) prepare
	bash deploy/local/pytest.sh

test-unit: $(STAMP)
	bash deploy/local/pytest.sh tests/unit

test-integration: $(STAMP)
	$(INFRA) prepare
	bash deploy/local/pytest.sh tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check processors tests deploy

# Hostile-input fuzzing for MSGSTATUS_FUZZ_SECONDS (default 300): prints cases and failures.
fuzz: $(STAMP)
	$(PY) tests/fuzz.py

bench: $(STAMP)
	$(INFRA) prepare
	$(PY) -m processors.bench

clean:
	rm -rf var .pytest_cache
