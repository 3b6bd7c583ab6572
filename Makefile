# Two commands set everything up: `make run` serves on SQLite, `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what the service needs; `make test` adds the development tools.
SERVICE_STAMP := $(VENV)/.installed-service
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint format migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(SERVICE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(SERVICE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(SERVICE_STAMP)
	$(BIN)/calibration-service migrate
	$(BIN)/calibration-service serve --host 127.0.0.1 --port 8000

# Tests run on two workers. Slow ones (browser, subprocess faults, fuzzing, fresh installs) are
# left to CI (CI=true) and to `make test-all`.
PYTEST_WORKERS ?= 2
SLOW := $(if $(filter true,$(CI)),,-m "not slow")

test: $(STAMP) lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) $(SLOW)

test-all: $(STAMP) lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(SERVICE_STAMP)
	$(BIN)/calibration-service migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache *.egg-info
