"""Start and stop the servers under test, one at a time, as a user would start them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from reliability.server import wait_ready

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen
    log_path: Path
    started_in_s: float

    @property
    def psutil(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


def gateway_command(port: int, *, engine: str = "vllm", extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--engine",
        engine,
        "--log-level",
        "warning",
        *extra,
    ]


def vllm_serve_command(
    port: int, model_path: str, name: str, *, dtype: str, gpu_memory_utilization: float
) -> list[str]:
    # The same engine limits the gateway passes to AsyncLLM (adapters/vllm_engine.py).
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        name,
        "--runner",
        "pooling",
        "--dtype",
        dtype,
        "--max-num-batched-tokens",
        "16384",
        "--max-num-seqs",
        "1024",
        "--gpu-memory-utilization",
        str(gpu_memory_utilization),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-log-stats",
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
    ]


@contextlib.contextmanager
def running(
    name: str,
    command: list[str],
    port: int,
    ready_path: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run `command` until the block ends; ready when GET `ready_path` answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    started = time.monotonic()
    with log_path.open("wb") as log:
        # A new session, so stopping it reaches vLLM's engine-core processes too.
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url + ready_path, process, log_path, timeout_s=START_TIMEOUT_S)
        yield Server(name, base_url, process, log_path, time.monotonic() - started)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Engine-core processes left in the group get a moment, then are killed.
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
