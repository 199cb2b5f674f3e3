#!/usr/bin/env bash
# The benchmark on an NVIDIA machine where `make install` ran (it installs the CUDA build of
# vLLM into .venv when nvidia-smi finds a GPU). From the checkout's root:
#
#     bash bench/gpu.sh [more `python -m bench` arguments, e.g. --quick]
#
# MODEL (default the built-in MiniLM) and PY (default .venv/bin/python) may be set. Writes
# bench/results/gpu/ (or RESULTS): latest.{json,md,png}, bench.log, the servers' logs, the GPU
# (nvidia-smi.txt) and the versions of vLLM, torch and CUDA. The CPU tables in README.md and
# docs/benchmarks.md are left alone (--out elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results/gpu}
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-builtin:all-MiniLM-L6-v2}
export HF_HUB_OFFLINE=1
mkdir -p "$RESULTS"
{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "cpus: $(nproc)"
} > "$RESULTS/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available())" | tee "$RESULTS/versions.txt"
# fp16, as a GPU runs it; 0.15 of the GPU per engine, because the gateway's --workers auto
# starts up to 4 engines for a small model. Arguments given to this script come last and win.
"$PY" -m bench --model "$MODEL" --dtype float16 --gpu-memory-utilization 0.15 \
    --out "$RESULTS" "$@" 2>&1 | tee "$RESULTS/bench.log"
