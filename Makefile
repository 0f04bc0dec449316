# Two entry points that work on a fresh machine with Python >= 3.11 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-torch
TORCH_VERSION := 2.13.0

.PHONY: run test test-fast test-slow lint report bench bench-gpu clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,plot,bench]"
	touch $(STAMP)

$(TORCH_STAMP): $(STAMP)  # the bench's torch peer, pinned: every bench measures the same one
	$(PY) -m pip install --quiet -e ".[torch]" "torch==$(TORCH_VERSION)"
	touch $(TORCH_STAMP)

run: $(STAMP)
	$(PY) -m gradjax run sweeps/seed_examples.toml --overwrite
	$(PY) -m gradjax findings results/seed_examples

lint: $(STAMP)  # ruff, and the import layers of pyproject.toml (an uphill import fails)
	$(PY) -m ruff check gradjax tests benchmarks examples
	$(VENV)/bin/lint-imports

test: lint  # everything but the slow tests: two workers, then what must run alone
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow and not alone"
	$(PY) -m pytest -q -m alone

test-fast: lint  # the inner loop: math and unit tests, no whole runs
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow and not integration"

test-slow: $(STAMP)  # the slow tests only (the recorded numbers of every option: ~4 min),
	# compiled at XLA's default optimization level (tests/conftest.py)
	GRADJAX_TEST_DEFAULT_OPT=1 $(PY) -m pytest -q -m slow

report: $(STAMP)
	$(PY) -m gradjax report results/seed_examples

bench: $(TORCH_STAMP)  # every peer, torch_func included
	$(PY) -m gradjax bench --workload all --sweep sweeps/bench_grid.toml --json results/bench.json

bench-gpu: $(STAMP)  # on an accelerator: TF32's effect on the statistics, then the bench (< 8 min)
	$(PY) benchmarks/gpu_check.py --out results/gpu_check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
