#!/usr/bin/env bash
# `make bench` on a GPU in one script (docs/benchmarks.md, "GPU"). From the checkout's root:
#
#     bash bench/gpu.sh [more `python -m bench` arguments, e.g. --quick]
#
# Two kinds of machine:
# - a GPU host where `make install` ran (the CUDA vllm and the project in .venv): nothing else;
# - the lent device, after ../shared/gpu-kit's c1.sh and c2.sh ran on it (vLLM in /tmp/vl, the
#   extra packages in /tmp/site, the fp16 model in /tmp/model16; see docs/benchmarks.md for the
#   packages bench/gpu-reqs.txt adds to the kit): found by the kit's .gpukit_s/env.sh.
#
# Writes bench/results/gpu/ (latest.{json,md,png}, bench.log, the servers' logs, nvidia-smi and
# versions), and copies it to $OUT when that is set (the device tool's folder). The CPU tables
# in README.md and docs/benchmarks.md are left alone (--out elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results/gpu}
if [ -f .gpukit_s/env.sh ]; then
    # shellcheck disable=SC1091
    source .gpukit_s/env.sh
    PY=${PY:-python3}
    MODEL=${MODEL:-/tmp/model16}
    if [ ! -f "$MODEL/config.json" ]; then
        echo "no model at $MODEL: run the kit's c1.sh and c2.sh on this machine first" >&2
        exit 3
    fi
else
    PY=${PY:-.venv/bin/python}
    MODEL=${MODEL:-builtin:all-MiniLM-L6-v2}
fi
export HF_HUB_OFFLINE=1
mkdir -p "$RESULTS"
{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "cpus: $(nproc)"
} > "$RESULTS/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available())" | tee "$RESULTS/versions.txt"
# fp16 as the GPU runs it; 0.15 of the GPU per engine (the gateway's --workers auto starts up to
# 4 engines for a small model); 5 s cells so that three server starts and the in-process
# baselines fit one 10-minute device call. Arguments given to this script come last and win.
status=0
"$PY" -m bench --model "$MODEL" --dtype float16 --gpu-memory-utilization 0.15 --duration 5 \
    --out "$RESULTS" "$@" 2>&1 | tee "$RESULTS/bench.log" || status=$?
if [ -n "${OUT:-}" ]; then
    cp -r "$RESULTS" "$OUT/"
fi
exit "$status"
