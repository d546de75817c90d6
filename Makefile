# The two commands of the README:
#   make run   - the main job on its embedded default
#   make test  - the test suite
# Both create .venv on first use: the CPU build of torch is installed first (so no multi-GB CUDA
# build is pulled), then the package with its dev extra.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/globalctx blocks

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not timm" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/gc_bench.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
