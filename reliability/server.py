"""Start a gateway subprocess the way a user does, and steer its fake engines.

Each fake model gets a control file (latency, dead, hang, nan_marker, fail: see
adapters/fake.py) and a stats file (calls, completed, aborted) in the server's work folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, process: subprocess.Popen, log_path: Path, *, timeout_s: float, poll_s: float = 0.5
) -> None:
    """Return once GET `url` answers 200; raise with the log's tail if the process exits
    first or `timeout_s` passes. Used by the battery, the benchmark and the tests."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url}: server exited with {process.returncode}:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(poll_s)
    raise RuntimeError(
        f"{url} did not become ready in {timeout_s:.0f} s:\n"
        + log_path.read_text(errors="replace")[-3000:]
    )


@dataclass
class Gateway:
    process: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, model: str, **behaviour: Any) -> None:
        """Switch a fake model's behaviour (merged into its control file)."""
        path = self.workdir / f"{model}.control.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(behaviour)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(current))
        os.replace(temporary, path)

    def stats(self, model: str) -> dict:
        path = self.workdir / f"{model}.stats.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_gateway(
    workdir: Path,
    *,
    fake_models: dict[str, dict] | None = None,
    models: list[dict] | None = None,
    args: list[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 30,
    cpu: str | None = None,
) -> Gateway:
    """A gateway serving `fake_models` ({name: fake engine options}) or real `models`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {}
    if fake_models is not None:
        config["engine"] = "fake"
        config["models"] = [
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
    else:
        config["models"] = models
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
    gateway = Gateway(process, port, workdir, log_path)
    try:
        wait_ready(
            gateway.base_url + "/ready", process, log_path, timeout_s=ready_timeout, poll_s=0.1
        )
    except RuntimeError:
        gateway.stop()
        raise
    return gateway


def start_workers(
    workdir: Path,
    count: int = 2,
    *,
    fake_models: dict[str, dict] | None = None,
    args: list[str] = (),
    env: dict[str, str] | None = None,
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


def closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it stayed open."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return received
    except TimeoutError:
        return None
    return received
