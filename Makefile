# The study's entry points. `make` alone lists them.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= demo
DEVICES ?=
EXECUTOR ?= local
SLURM ?=
STUDY = $(PYTHON) -m ckd_lib.study --profile $(PROFILE) --executor $(EXECUTOR) \
	$(if $(DEVICES),--devices $(DEVICES)) $(foreach option,$(SLURM),--slurm $(option))

.DEFAULT_GOAL := help
.PHONY: help setup test lint reproduce plan status rehearse bench clean notebooks environment teachers \
	same-arch cross-arch ablations budget efficiency visualisations imagenet coco coco-demo report verify

help: ## List the targets with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install ckd_lib (editable) with its notebook and dev extras

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[notebooks,dev]"
	$(PYTHON) -m ckd_lib.study --sync-notebooks
	touch $(STAMP)

test: setup ## Run the test suite (sets up first if needed)
	$(PYTHON) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup

lint: setup ## Run ruff over the project
	$(VENV)/bin/ruff check .

reproduce: setup ## Run PROFILE (default demo) into results/PROFILE/report.html (DEVICES=0,1 spreads runs; EXECUTOR=slurm submits to SLURM)
	$(STUDY)

plan: setup ## Runs, epochs and estimated GPU-hours of PROFILE, per notebook; runs nothing
	$(PYTHON) -m ckd_lib.study --profile $(PROFILE) --plan

rehearse: setup ## Every run of PROFILE, a few steps each on generated data, then its report (results/rehearse-PROFILE/, step times in benchmarks/)
	$(STUDY) --rehearse

status: setup ## Done / running / pending / failed per run of PROFILE (records and SLURM)
	$(PYTHON) -m ckd_lib.study --profile $(PROFILE) --status

verify: setup ## Audit results/PROFILE: models evaluated again, checksums, run inputs, summary.csv; trains nothing
	$(PYTHON) -m ckd_lib.study --profile $(PROFILE) --verify

notebooks: setup ## Write notebooks/*.ipynb from the .py scripts (to open in JupyterLab)
	$(PYTHON) -m ckd_lib.study --sync-notebooks

environment: setup ## Only the environment and data check (00)
	$(STUDY) --only 00_environment
teachers: setup ## Only the teachers: train or load, check against the literature (10)
	$(STUDY) --only 10_teachers
same-arch: setup ## Only the same-architecture table (20)
	$(STUDY) --only 20_same_arch
cross-arch: setup ## Only the cross-architecture table (21)
	$(STUDY) --only 21_cross_arch
ablations: setup ## Only the ablations (30)
	$(STUDY) --only 30_ablations
budget: setup ## Only the matched-budget comparison (40)
	$(STUDY) --only 40_matched_budget
efficiency: setup ## Only time per iteration and memory by method (50)
	$(STUDY) --only 50_efficiency
visualisations: setup ## Only t-SNE, correlation heatmaps, training curves (60)
	$(STUDY) --only 60_visualisations
imagenet: setup ## The ImageNet profile (70, torchrun over the GPUs, then its report)
	$(PYTHON) -m ckd_lib.study --profile imagenet --executor $(EXECUTOR) \
		$(foreach option,$(SLURM),--slurm $(option))

coco: setup ## The MS-COCO profile (80, torchrun over the GPUs, then its report)
	$(PYTHON) -m ckd_lib.study --profile coco --executor $(EXECUTOR) \
		$(foreach option,$(SLURM),--slurm $(option))

coco-demo: setup ## The COCO pipeline on generated shapes, on the CPU, then its report
	$(PYTHON) -m ckd_lib.study --profile coco_demo
report: setup ## Only rebuild results/PROFILE/report.html from the records (90)
	$(STUDY) --only 90_report

bench: setup ## Time the reference loop against the fast path (python -m ckd_lib.bench)
	$(PYTHON) -m ckd_lib.bench

clean: ## Remove the virtual environment and caches (never results/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
