# The two fresh-machine commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU cores for jobs, and GPUs to share out (default: the GPUs nvidia-smi lists; none on a laptop).
CORES ?= all
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
# Local runs: the default profile, and `--resources gpu=N` where there are GPUs. Targets come first, since
# `--resources` would take them for resources (and `--configfile` for more config files: `snakemake data
# --configfile paper.yaml`, not `snakemake --configfile paper.yaml data`).
snakemake = $(BIN)/snakemake $(1) --workflow-profile workflow/profiles/default --cores $(CORES) \
	$(if $(filter-out 0,$(GPUS)),--resources gpu=$(GPUS))

.PHONY: setup setup-slurm run run-slurm data test test-unit lint format report bench-loader bench-train \
	bench-supernet bench-dag bench-layout bench-dash bench-dash-crop lock clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency pins change.
$(VENV)/.installed: $(BIN)/activate pyproject.toml requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

setup-slurm: setup  ## adds snakemake-executor-plugin-slurm (for a cluster's login node)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev,slurm]"

run: setup  ## the whole default DAG on the embedded data, then the HTML report
	$(call snakemake,all)
	$(BIN)/snakemake --report results/report.html

run-slurm: setup-slurm  ## the DAG as SLURM jobs (workflow/profiles/slurm), then the report
	$(BIN)/snakemake all --workflow-profile workflow/profiles/slurm
	$(BIN)/snakemake --report results/report.html

data: setup  ## shards of all configured tasks
	$(call snakemake,data)

test: setup  ## unit and integration tests
	$(BIN)/pytest -q

test-unit: setup
	$(BIN)/pytest -q -m "not integration"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/rules

report: setup
	$(BIN)/snakemake --report results/report.html

bench-loader: setup  ## shard vs in-memory read throughput per task
	$(BIN)/python benchmarks/loader_throughput.py

bench-train: setup  ## our training loop against a bare PyTorch loop
	$(BIN)/python benchmarks/train_throughput.py

bench-supernet: setup  ## DARTS supernet search step: batched edges against the per-op loop (2D and 1D)
	$(BIN)/python benchmarks/supernet_step.py
	$(BIN)/python benchmarks/supernet_step.py --task ecg

bench-layout: setup  ## CPU training step of the smoke networks: NCHW against channels-last
	$(BIN)/python benchmarks/cpu_layout.py

bench-dash: setup  ## DASH's search, selection and retraining against the WRN's training, per task
	$(BIN)/python benchmarks/dash_cost.py --archs 'results/search/{task}/dash/seed0/arch.json' $(BENCH_DASH_ARGS)

bench-dash-crop: setup  ## DASH's search step: kernels cropped to the taps that reach the input against full ones
	$(BIN)/python benchmarks/dash_crop.py

bench-dag: setup  ## snakemake -n of the full paper grid against a bare Snakemake DAG of the same shape
	$(BIN)/python benchmarks/dag_overhead.py

# After `make setup-slurm`, so that the SLURM plugin's pins stay in the lock.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock
	# envs/train.yaml's CUDA build of XGBoost, at the version of the venv's CPU build.
	grep '^xgboost-cpu==' requirements.lock | sed 's/^xgboost-cpu/xgboost/' >> requirements.lock

clean:
	rm -rf results logs .snakemake
