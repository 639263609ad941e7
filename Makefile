# msgstatus: `make run` and `make test` are all a newcomer needs (README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFRA := $(PY) deploy/local/infra.py

.PHONY: run test test-unit test-integration test-faults lint bench fuzz infra-up infra-down install clean lock

# Exact versions with hashes (requirements.lock; `make lock` regenerates it from the ranges
# in pyproject.toml): the worker's Faust/aiokafka patches are written for those versions.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "msgstatus needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

lock:
	@test -x $(HOME)/.cache/msgstatus/piptools/bin/pip-compile || \
		($(PYTHON) -m venv $(HOME)/.cache/msgstatus/piptools && \
		 $(HOME)/.cache/msgstatus/piptools/bin/pip install -q pip-tools)
	$(HOME)/.cache/msgstatus/piptools/bin/pip-compile -q --generate-hashes --extra dev \
		--strip-extras --allow-unsafe --no-emit-find-links -o requirements.lock pyproject.toml

install: $(STAMP)

infra-up: $(STAMP)
	$(INFRA) up

infra-down: $(STAMP)
	$(INFRA) down

run: $(STAMP)
	bash deploy/local/run.sh

# Everything but the long `soak` scenarios, which `make test-faults` runs (~20 minutes).
test: $(STAMP)
	$(INFRA) prepare
	bash deploy/local/pytest.sh -m "not soak"

test-unit: $(STAMP)
	bash deploy/local/pytest.sh tests/unit

test-integration: $(STAMP)
	$(INFRA) prepare
	bash deploy/local/pytest.sh -m "not soak" tests/integration

# Fault injection beyond make test's bounded subset: random SIGKILL rounds with more seeds
# (MSGSTATUS_FAULT_ROUNDS, default 8), every named crash point, every scale-out scenario
# with a longer outage, both broker restarts: every `soak` test, and the rest of their files.
test-faults: $(STAMP)
	$(INFRA) prepare
	MSGSTATUS_FAULT_ROUNDS=$${MSGSTATUS_FAULT_ROUNDS:-8} MSGSTATUS_SCALE_OUTAGE_SECONDS=120 \
		bash deploy/local/pytest.sh tests/integration/test_random_sigkill.py \
		tests/integration/test_crash_consistency.py tests/integration/test_scale_out.py \
		tests/integration/test_broker_restart.py tests/integration/test_delivery_unknown.py \
		tests/integration/test_worker_crash.py

lint: $(STAMP)
	$(VENV)/bin/ruff check processors bench tests deploy

# Hostile-input fuzzing for MSGSTATUS_FUZZ_SECONDS (default 300): prints cases and failures.
fuzz: $(STAMP)
	$(PY) tests/fuzz.py

bench: $(STAMP)
	$(INFRA) prepare
	$(PY) -m bench

clean:
	rm -rf var .pytest_cache
