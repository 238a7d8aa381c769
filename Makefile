# The study's entry points. `make` alone lists them.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= demo

.DEFAULT_GOAL := help
.PHONY: help setup test lint reproduce bench clean

help: ## List the targets with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install ckd_lib (editable) with its notebook and dev extras

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[notebooks,dev]"
	touch $(STAMP)

test: setup ## Run the test suite (sets up first if needed)
	$(PYTHON) -m pytest -q

lint: setup ## Run ruff over the project
	$(VENV)/bin/ruff check .

reproduce: setup ## Run the study for PROFILE (default demo) and build results/report.html
	$(PYTHON) -m ckd_lib.study --profile $(PROFILE)

bench: setup ## Time the reference loop against the fast path (python -m ckd_lib.bench)
	$(PYTHON) -m ckd_lib.bench

clean: ## Remove the virtual environment and caches (never results/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
