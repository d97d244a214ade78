# Two set-up commands: `make run` and `make test`. Everything else is installed by them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck imports pytest clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Homeward needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

## The demo: `run` (API + ingest + ticker, embedded Redis and broker) plus a simulated district (.homeward-demo/).
run: $(VENV)/.run-installed
	$(BIN)/homeward demo $(DEMO_ARGS)

## Format check, lint, types, import direction, then the test suite.
test: $(VENV)/.test-installed lint typecheck imports pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

imports: $(VENV)/.test-installed
	$(BIN)/lint-imports

pytest: $(VENV)/.test-installed
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
