"""Start a server process (the gateway or `vllm serve`), wait until it is ready, stop it.

Every server the benchmark, the battery and the tests start goes through `spawn`,
`wait_ready` and `stop`; `running` puts the three together for a `Launch`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness.paths import REPO

LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_command(port: int, *args: str) -> list[str]:
    """`python -m gateway serve` on the loopback address and `port`, then `args`."""
    return [
        sys.executable,
        *("-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)),
        *args,
    ]


def spawn(
    command: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `command` in the repository, its output going to `log_path`, with this process's
    environment plus `HF_HUB_OFFLINE=1` (nothing downloads) unless `env` is the whole one.
    `new_session` puts it in its own process group, so that `stop(group=True)` also reaches
    what it starts (vLLM's engine-core processes)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=REPO,
            env=dict(env) if env is not None else {**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    seen: list[int] | None = None,
) -> None:
    """Return once GET `url` answers 200; raise with the log's tail if the process exits
    first or `timeout_s` passes. Every status answered on the way is appended to `seen`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url}: server exited with {process.returncode}:\n" + _tail(log_path)
            )
        try:
            status = httpx.get(url, timeout=5).status_code
        except httpx.TransportError:
            status = None  # not listening yet
        if status is not None and seen is not None:
            seen.append(status)
        if status == 200:
            return
        time.sleep(poll_s)
    raise RuntimeError(f"{url} did not become ready in {timeout_s:.0f} s:\n" + _tail(log_path))


def stop(process: subprocess.Popen[bytes], *, timeout_s: float = 30, group: bool = False) -> int:
    """SIGTERM, then SIGKILL after `timeout_s`; the exit code. With `group`, the signals go to
    the whole process group, and what is left of it a second after the leader exits is
    killed: vLLM's engine-core processes must not outlive the server."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    if process.poll() is None:
        send(signal.SIGTERM)
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        code = process.wait()
    if group:
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return code


@dataclass(frozen=True)
class Launch:
    """One server to start: its command, what its environment adds and drops, its routes."""

    name: str
    command: list[str]
    ready_path: str
    embeddings_path: str
    rerank_path: str
    env: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    def shown(self, model_path: str) -> str:
        """The command as a user would type it: `python` for this interpreter, the model
        folder as MODEL, without the loopback address and the port that was picked."""
        words = list(self.command)
        if words[0] == sys.executable:
            words = ["python", *words[1:]]
        for flag in ("--host", "--port"):
            if flag in words:
                i = words.index(flag)
                del words[i : i + 2]
        return " ".join("MODEL" if w == model_path else w for w in words)

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The server's whole environment, started from `base` (the caller's own)."""
        env = {**base, "HF_HUB_OFFLINE": "1", **self.env}
        for name in self.unset:
            env.pop(name, None)
        return env

    def to_dict(self, model_path: str) -> dict[str, Any]:
        return {"command": self.shown(model_path), "env": dict(self.env), "unset": self.unset}


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in_s: float

    @property
    def psutil(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


@contextlib.contextmanager
def running(
    launch: Launch, port: int, log_dir: Path, *, timeout_s: float = 900
) -> Iterator[Server]:
    """Run `launch` (listening on `port`) until the block ends; ready when GET its ready path
    answers 200. Its log is `log_dir/NAME.log`."""
    log_path = log_dir / f"{launch.name}.log"
    started = time.monotonic()
    process = spawn(launch.command, log_path, env=launch.environment(os.environ), new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url + launch.ready_path, process, log_path, timeout_s=timeout_s)
        yield Server(launch.name, base_url, process, log_path, time.monotonic() - started)
    finally:
        stop(process, timeout_s=60, group=True)
