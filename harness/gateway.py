"""A gateway subprocess started the way a user starts it, with fake engines to steer or real
models to serve.

Each fake model gets a control file (latency, dead, hang, nan_marker, fail: see
adapters/fake.py) and a stats file (calls, completed, aborted) in the server's work folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from harness.launch import free_port, gateway_command, spawn, stop, wait_ready


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    # Every /ready status answered while it started, in order.
    ready_history: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def control(self, model: str, **behaviour: Any) -> None:
        """Switch a fake model's behaviour (merged into its control file)."""
        path = self.workdir / f"{model}.control.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(behaviour)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(current))
        os.replace(temporary, path)

    def stats(self, model: str) -> dict[str, Any]:
        path = self.workdir / f"{model}.stats.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        return stop(self.process, timeout_s=timeout)


def _fake_models(
    workdir: Path, fake_models: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "path": name,
            "engine_kwargs": {
                "control_file": str(workdir / f"{name}.control.json"),
                "stats_file": str(workdir / f"{name}.stats.json"),
                "keep_calls": 0,  # a long run must not grow by what tests inspect
                **options,
            },
        }
        for name, options in fake_models.items()
    ]


def start_gateway(
    workdir: Path,
    *,
    fake_models: Mapping[str, Mapping[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30,
    cpu: str | None = None,
) -> Gateway:
    """A gateway serving `fake_models` ({name: fake engine options}) or real `models` (the
    YAML `models:` list), with any other YAML settings in `config`, ready to answer. `cpu`
    pins it to those CPUs (taskset)."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = dict(config or {})
    if fake_models is not None:
        settings["engine"] = "fake"
        settings["models"] = _fake_models(workdir, fake_models)
    else:
        settings["models"] = models
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    port = free_port()
    command = gateway_command(port, "--config", str(config_path), *args)
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    log_path = workdir / "server.log"
    process = spawn(command, log_path, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    gateway = Gateway(process, port, workdir, log_path)
    try:
        wait_ready(
            gateway.base_url + "/ready",
            process,
            log_path,
            timeout_s=ready_timeout,
            poll_s=0.1,
            seen=gateway.ready_history,
        )
    except RuntimeError:
        gateway.stop()
        raise
    return gateway


def start_workers(
    workdir: Path,
    count: int = 2,
    *,
    fake_models: Mapping[str, Mapping[str, Any]] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60,
    **kwargs: Any,
) -> Gateway:
    """A gateway with `count` worker processes (`--workers`), serving `fake_models` (default
    one fake model `m`), once every worker is ready. Its metrics folder is an operator's
    (`workdir/metrics`, emptied at start, kept): a supervisor killed with SIGKILL cannot
    remove a temporary one."""
    gateway = start_gateway(
        workdir,
        fake_models={"m": {}} if fake_models is None else fake_models,
        args=["--workers", str(count), *args],
        env={"PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"), **(env or {})},
        ready_timeout=ready_timeout,
        **kwargs,
    )
    try:
        wait_every_worker_ready(gateway.base_url)
    except BaseException:
        gateway.process.kill()
        gateway.process.wait()
        raise
    return gateway


def wait_every_worker_ready(url: str, timeout_s: float = 30.0) -> None:
    """One worker answering /ready 200 says nothing of another, which may still be starting
    its engine: wait for 10 ready answers in a row on fresh connections (the kernel spreads
    them over the workers)."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while streak < 10:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: not every worker became ready in {timeout_s:.0f} s")
        with httpx.Client() as client:
            streak = streak + 1 if client.get(url + "/ready").status_code == 200 else 0


def worker_processes(gateway: Gateway) -> list[psutil.Process]:
    """The worker processes of a gateway started with `--workers` (not the resource tracker
    that multiprocessing also starts)."""
    return [
        p
        for p in psutil.Process(gateway.process.pid).children()
        if "spawn_main" in " ".join(p.cmdline())
    ]
