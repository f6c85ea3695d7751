# Two entry points: `make demo` and `make test`. Both create .venv and install once.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: it takes the CPU build from local disk; a bare requirement would pull CUDA.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/nightowl demo

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check nightowl api tasks workers migrations tests bench

# mypy cannot follow the editable install's import hook that maps nightowl_api -> api/ (and
# tasks/, workers/), so it reads them through links under those names (mypy_path in pyproject).
typecheck: install
	mkdir -p build/typecheck
	for d in api tasks workers; do ln -sfn ../../$$d build/typecheck/nightowl_$$d; done
	$(VENV)/bin/mypy

# Every benchmark in its quick mode (each under a minute; needs ../shared/datasets).
bench-quick: install
	HF_HUB_OFFLINE=1 $(PY) bench/e2e_vs_raw.py --quick
	HF_HUB_OFFLINE=1 $(PY) bench/vs_naive.py --quick
	HF_HUB_OFFLINE=1 $(PY) bench/scale.py --quick
	HF_HUB_OFFLINE=1 $(PY) bench/finetune_overhead.py --quick
	HF_HUB_OFFLINE=1 $(PY) bench/gpu.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
