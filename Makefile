# The two set-up commands of the README: `make test` and `make demo`.
# Both install what they need themselves (Debian packages, .venv, the project).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test demo bootstrap lint types pytest bench fuzz chaos clean

bootstrap:
	@scripts/bootstrap.sh

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: bootstrap
	$(VENV)/bin/mypy

pytest: bootstrap
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint types pytest

demo: bootstrap
	$(PY) -m agent.demo

# The same hypothesis fuzz targets as in `make test`, with 50x the examples.
FUZZ_TARGETS := tests/drivers/test_decoder_properties.py tests/agent/test_envelope.py \
	tests/agent/test_config.py tests/agent/test_api.py tests/agent/test_session.py \
	tests/hq/test_fuzz.py tests/drivers/test_apdu.py
fuzz: bootstrap
	CUMULUS_FUZZ_SCALE=$${CUMULUS_FUZZ_SCALE:-50} $(PY) -m pytest -q $(FUZZ_TARGETS)

# The whole system under crashes and outages (make test runs a short version).
CHAOS_ARGS ?= --baskets 20000 --kills 200
chaos: bootstrap
	$(PY) -m tests.chaos.harness $(CHAOS_ARGS)

# Every benchmark: bench/results.json, bench/results.png and the README's table.
bench: bootstrap
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q -e '.[test,bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis artifacts
