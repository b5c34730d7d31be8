# Two commands on a fresh machine:
#   make run    set up .venv and run the whole pipeline on the bundled sample (dvc repro)
#   make test   set up .venv (and the test services) and run the test suite
# Everything else here is a helper for those two.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# pytest-xdist workers of `make test`: each test file stays on one worker (module fixtures
# such as the full-pipeline runs are made once); two suit a two-core machine
TEST_WORKERS ?= 2
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# dvc.yaml runs each stage as `python -m pipelines STAGE`: that `python` must be the venv's,
# whatever python the caller's PATH finds first (pyenv shims, a system python without our packages)
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test setup test-setup lint bench lock clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)          # first: the CPU wheel, so nothing pulls a CUDA build
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

run: setup  ## run the whole pipeline on the embedded default (dvc repro), then summarise its metrics
	$(BIN)/dvc repro
	$(BIN)/python -m pipelines summary

test-setup: setup  ## install the Debian packages the integration tests need (root only)
	@bash scripts/test-services.sh

test: test-setup  ## run lint and the whole test suite (TEST_WORKERS=1 for one process)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup  ## ruff
	$(BIN)/ruff check .

bench: setup  ## benchmarks with ratios against their named baselines
	$(BIN)/python -m benchmarks

lock: setup  ## rewrite constraints.txt from the current .venv
	{ echo '# Versions resolved together on the reference machine (pip freeze); `make` installs with -c constraints.txt.'; \
	  echo '# Regenerate with `make lock` after changing pyproject.toml.'; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt

clean:  ## remove the virtualenv and caches (not data)
	rm -rf $(VENV) .pytest_cache .ruff_cache
