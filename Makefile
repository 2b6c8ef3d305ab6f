# ingest-pipeline: common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LAKE ?= lake
EXAMPLE ?= examples/lunar_lander.json
BENCH_DATA ?= bench-data
# Transitions in the sampler section's lakes (built and prepared once into BENCH_DATA; 2000000 takes ~45 min)
SAMPLER ?= 200000

.DEFAULT_GOAL := help
.PHONY: help venv install run test lint typecheck bench bench-quick bench-clean clean

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

# Batch ingestion for unattended use: one stamp per input file under $(INGESTED), holding the file's
# --json result line, so `make -j` ingests files in parallel, a second run does nothing, and a changed
# file is ingested again. Invalid files are stamped too (they are not retried until they change) and
# listed in $(REPORT); a file that failed (unreadable input, unwritable lake) stops make (`make -k`
# goes on with the others) and is retried next time. File names with spaces are not supported here.
INBOX ?= inbox
INGEST ?= $(VENV)/bin/ingest-pipeline
INGESTED ?= $(LAKE)/_ingested
REPORT ?= $(LAKE)/_reports/invalid.jsonl
INBOX_DIR = $(patsubst %/,%,$(INBOX))
INBOX_FILES = $(shell find '$(INBOX_DIR)' -name '.*' ! -name . -prune -o -type f \( -iname '*.json' \
	-o -iname '*.json.gz' -o -iname '*.json.bz2' -o -iname '*.json.xz' -o -iname '*.json.zst' \) -print 2>/dev/null | sort)
INGEST_TOOL = $(filter $(VENV)/bin/%,$(firstword $(INGEST)))

ifneq ($(filter ingest,$(MAKECMDGOALS)),)
ifeq ($(wildcard $(INBOX_DIR)/.),)
$(error INBOX=$(INBOX) is not a folder; use: make ingest INBOX=dir LAKE=dir)
endif
endif

.PHONY: ingest
ingest: $(REPORT) ## Ingest the new episode files of INBOX=dir into LAKE=dir (incremental, make -j)

$(REPORT): $(patsubst $(INBOX_DIR)/%,$(INGESTED)/%.done,$(INBOX_FILES))
	@mkdir -p '$(@D)'
	@find '$(INGESTED)' -type f -name '*.done' -exec grep -h '"status": "invalid"' {} + 2>/dev/null | sort > '$@.tmp'
	@mv '$@.tmp' '$@'
	@echo "$$(wc -l < '$@' | tr -d ' ') invalid file(s) listed in $@"

$(INGESTED)/%.done: $(INBOX_DIR)/% | $(INGEST_TOOL)
	@mkdir -p '$(@D)'
	@$(INGEST) run '$<' --lake '$(LAKE)' --jobs 1 --json > '$@.tmp'; \
	status=$$(sed -n 's/.*"status": "\([a-z]*\)".*/\1/p' '$@.tmp'); \
	echo "$<: $${status:-failed}"; \
	case "$$status" in \
	  ingested|exists|invalid) mv '$@.tmp' '$@' ;; \
	  *) cat '$@.tmp' >&2; rm -f '$@.tmp'; exit 1 ;; \
	esac

$(VENV)/bin/ingest-pipeline: | $(PY)
	$(PIP) install --quiet .

test: install ## Run the test suite
	$(PY) -m pytest -q

lint: install ## ruff and mypy
	$(PIP) install --quiet ruff mypy
	$(VENV)/bin/ruff check pipeline cli.py tests benchmarks
	$(VENV)/bin/mypy pipeline cli.py benchmarks

bench: install ## Benchmark ingest, reads (~100 MB, ~1 GB) and the sampler (SAMPLER=200000,2000000); writes BENCHMARKS.md (long)
	$(PY) -m benchmarks.run --data $(BENCH_DATA) --sampler $(SAMPLER)
	$(PY) -m benchmarks.report --data $(BENCH_DATA) --append BENCHMARKS.md

bench-quick: install ## Benchmark the ~100 MB files only (a few minutes); writes BENCHMARKS.md
	$(PY) -m benchmarks.run --quick --data $(BENCH_DATA) --sampler 0

bench-clean: ## Remove the generated benchmark files and lakes (bench-data/)
	rm -rf $(BENCH_DATA)

clean: ## Remove the virtualenv, caches and the default lake and bench-data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist lake $(BENCH_DATA)
