# Two commands set everything up: `make run` serves on SQLite, `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint format migrate bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
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

migrate: $(STAMP)
	$(BIN)/calibration-service migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache *.egg-info
