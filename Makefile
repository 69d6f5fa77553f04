# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RECSYS_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast lint format clean-venv bento

setup: $(STAMP)

# torch goes first *with* its dependencies (a CPU wheel where pip's find-links has one, the
# CUDA build elsewhere); then the whole lock with --no-deps, because torchrec declares the CUDA
# fbgemm-gpu while we ship the CPU build fbgemm-gpu-cpu (see ../shared/stack/NOTES.md).
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet "torch==$$(sed -n 's/^torch==//p' requirements.lock)"
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recsys demo

# pytest exits 5 when it collected no tests: that is a failure, never a pass.
test: $(STAMP)
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The served model trains on ml-latest-small unless DATASET= says otherwise (MODEL= likewise).
DATASET ?= ml-latest-small
MODEL ?= two_tower+ranker
bento: $(STAMP)
	$(VENV)/bin/recsys bento build --dataset $(DATASET) --model $(MODEL)

# make lab: JupyterLab from .venv on notebooks/, with the `recsys` kernel the notebooks name.
# The kernel is registered inside .venv (--prefix): it lives and dies with this environment and
# never shadows another checkout's kernel in ~/.local/share/jupyter. LAB_ARGS=--no-browser etc.
# (root, as in a container, must say --allow-root or Jupyter refuses to start.)
KERNEL := $(VENV)/share/jupyter/kernels/recsys/kernel.json
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
.PHONY: lab kernel
kernel: $(KERNEL)
$(KERNEL): $(STAMP)
	$(PY) -m ipykernel install --prefix $(abspath $(VENV)) --name recsys --display-name "recsys (.venv)"
lab: $(KERNEL)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean-venv:
	rm -rf $(VENV)
