# Every target installs what it needs into .venv first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint test unit integration demo crds bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy

## The whole suite: lint, type-check, unit and integration tests (e2e skips without a cluster).
test: lint
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

## The embedded demo: API stand-in + dev token server + operator, no cluster needed.
demo: install
	$(BIN)/tokensync demo

## Regenerate crds/ from the models.
crds: install
	$(BIN)/tokensync crd > crds/tokensync.io_clientcredentials.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
