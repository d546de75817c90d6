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

.PHONY: run test lint bench install clean fashion-mnist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP) fashion-mnist
	$(BIN)/globalctx compare

# Fashion-MNIST for `run` and the tests: when the package cannot find it, install Debian's
# dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist/) where apt is available;
# otherwise say so and go on (tests that need it are skipped with that reason).
fashion-mnist: $(STAMP)
	@$(BIN)/python -c "from globalctx.train.data import find_fashion_mnist; find_fashion_mnist()" 2>/dev/null \
	|| { if command -v apt-get >/dev/null 2>&1; then \
	       SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	       { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; } \
	       || echo "could not install dataset-fashion-mnist; see docs/training.md for other ways to get it"; \
	     else echo "Fashion-MNIST not found and apt-get is not available; see docs/training.md"; fi; }

test: $(STAMP) fashion-mnist
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not timm" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# the figures quoted in the README (a few minutes; run on an idle machine)
bench: $(STAMP)
	$(BIN)/python benchmarks/gc_bench.py
	$(BIN)/python benchmarks/cost_table.py --threads 2

clean:
	rm -rf $(VENV) build dist src/*.egg-info
