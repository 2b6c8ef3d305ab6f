# ingest-pipeline: common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LAKE ?= lake
EXAMPLE ?= examples/lunar_lander.json

.DEFAULT_GOAL := help
.PHONY: help venv install run test lint typecheck bench bench-quick clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY) ## Create the virtualenv in .venv

install: $(PY) ## Install the package (non-editable) with its test tools
	$(PIP) install --quiet ".[test]"

run: install ## Ingest the bundled example episode into ./lake and summarise the lake
	$(VENV)/bin/ingest-pipeline run $(EXAMPLE) --lake $(LAKE)
	$(PY) examples/summarize.py $(LAKE)

test: install ## Run the test suite
	$(PY) -m pytest -q

lint: install ## ruff and mypy
	$(PIP) install --quiet ruff mypy
	$(VENV)/bin/ruff check pipeline cli.py tests
	$(VENV)/bin/mypy pipeline cli.py

clean: ## Remove the virtualenv, caches and the default lake
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist lake
