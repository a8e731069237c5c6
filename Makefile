# Two commands set up a fresh machine: `make demo` (the workflow on the bundled offline demo)
# and `make test` (lint + test suite). Both create the virtualenv at .venv/ when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test lint format bench clean-results

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --configfile workflow/demo/config.yaml
	@echo "Report: $(abspath results/report/report.html)"

lint: $(STAMP)
	$(BIN)/ruff check workflow tests benchmarks
	$(BIN)/ruff format --check workflow tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(BIN):$$PATH" snakemake --lint --configfile workflow/demo/config.yaml

test: $(STAMP) lint
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q

bench: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/run.py

format: $(STAMP)
	$(BIN)/ruff format workflow tests benchmarks
	$(BIN)/ruff check --fix workflow tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules
