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

.PHONY: run test test-interop lint bench install clean fashion-mnist

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

# The interop tests (marker `timm`: torchvision / timm models, feature extraction, timm's registry)
# and the mmcv adapter, in a second venv: torch 2.14.1 + torchvision 0.29.1 (a CUDA build of about
# 5.5 GB that runs on the CPU; pip takes both from this machine's disk where they lie there) +
# timm, then the package with its dev and mmcv extras (mmcv-lite 2.1, the release mmdet 3.3.0 accepts).
INTEROP_VENV  ?= .venv-interop
INTEROP_BIN   := $(INTEROP_VENV)/bin
INTEROP_PKGS  ?= torch==2.14.1 torchvision==0.29.1 timm==1.0.31
INTEROP_STAMP := $(INTEROP_VENV)/.installed

$(INTEROP_STAMP): pyproject.toml
	test -x $(INTEROP_BIN)/python || $(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_BIN)/pip install -q --upgrade pip
	$(INTEROP_BIN)/pip install -q $(INTEROP_PKGS)
	$(INTEROP_BIN)/pip install -q -e '.[dev,mmcv]' $(INTEROP_PKGS)
	touch $(INTEROP_STAMP)

MMCV_TESTS := tests/test_integrations_mmcv.py tests/test_mmcv_context.py tests/test_nonlocal_mmcv.py

# the README's export table, every cell, the slow ResNet-50 rows included
EXPORT_TESTS := tests/test_export_paths.py

# all three runs always run; the target fails if any does
test-interop: $(INTEROP_STAMP)
	$(INTEROP_BIN)/python -m pytest -q -m "timm and not slow and not gpu" $(PYTEST_ARGS); timm_rc=$$?; \
	$(INTEROP_BIN)/python -m pytest -q -m "not slow and not gpu" $(MMCV_TESTS) $(PYTEST_ARGS); mmcv_rc=$$?; \
	$(INTEROP_BIN)/python -m pytest -q -m "not gpu" $(EXPORT_TESTS) $(PYTEST_ARGS); export_rc=$$?; \
	test $$timm_rc = 0 && test $$mmcv_rc = 0 && test $$export_rc = 0

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# the figures quoted in the README (a few minutes; run on an idle machine; on a shared one add
# BENCH_THREADS=1 BENCH_CLOCK=thread)
BENCH_THREADS ?= 2
BENCH_CLOCK   ?= wall
bench: $(STAMP)
	$(BIN)/python benchmarks/gc_bench.py
	$(BIN)/python benchmarks/cost_table.py --threads 2
	$(BIN)/python benchmarks/gc_bench.py --rounds 20 --threads $(BENCH_THREADS) --clock $(BENCH_CLOCK) \
	  --modes inference,train --breakdown --json benchmarks/results/gc_bench_train.json
	$(BIN)/globalctx bench blocks --blocks nl --sizes 16,32,64,96,128 --channels 64 -b 1 --mode train \
	  --runs 3 --warmup 1 --threads $(BENCH_THREADS) --clock $(BENCH_CLOCK) --memory alloc --table markdown \
	  --out benchmarks/results/bench_nl_train_scaling.csv --out benchmarks/results/bench_nl_train_scaling.json \
	  --plot benchmarks/results/bench_nl_train_scaling.png
	$(BIN)/python benchmarks/net_bench.py --only "GC r16 c3-c5 (gc_resnet50),SE r16 c3-c5 (GC's placement),se_resnet50" \
	  --mode both --rounds 5 --reps 1 --threads $(BENCH_THREADS) --clock $(BENCH_CLOCK) \
	  --out benchmarks/results/models_net_train.md

clean:
	rm -rf $(VENV) $(INTEROP_VENV) build dist src/*.egg-info
