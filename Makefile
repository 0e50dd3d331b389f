# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# dbt, an analyst's client the tests run against the ClickHouse HTTP endpoint, apart.
DBT_REQUIREMENTS := tests/fixtures/dbt/requirements.txt
DBT_STAMP := $(VENV)/dbt/.installed-$(shell cksum < $(DBT_REQUIREMENTS) | cut -d' ' -f1)

.PHONY: demo test lint unit integration bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

$(DBT_STAMP): $(DBT_REQUIREMENTS) $(STAMP)
	$(PYTHON) -m venv $(VENV)/dbt
	$(VENV)/dbt/bin/python -m pip install --quiet -r $(DBT_REQUIREMENTS)
	rm -f $(VENV)/dbt/.installed-*
	touch $@

## Start the embedded stack (broker, worker, sink) with simulated traffic; Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/touchstream up --demo

## Lint, type-check, then every test (unit + integration on the embedded services).
test: $(STAMP) $(DBT_STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP) $(DBT_STAMP)
	$(BIN)/python -m pytest tests/integration

bench: $(STAMP)
	$(BIN)/python -m bench.pipeline --json bench/results.json

## The pages' screenshots in docs/, from a fresh demo (needs Debian's chromium).
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) .touchstream .pytest_cache .mypy_cache .ruff_cache *.egg-info
