"""Battery sections for production hardening: bounded connections, engines that heal,
workers that are replaced. Each function is a method of the battery (battery.py), written
against `SectionRunner`, the part of it they use, so that this module does not import it."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from harness.gateway import Gateway, start_gateway, start_workers, worker_processes
from harness.raw_http import closed_by_server


class SectionRunner(Protocol):
    """What a section needs from the battery that runs it."""

    key: str
    auth_headers: dict[str, str]
    workdir: Path
    server_cpu: str | None

    def start(
        self, name: str, fakes: dict[str, dict] | None = ..., args: list[str] = ..., **kwargs: Any
    ) -> Gateway: ...

    def figure(self, section: str, name: str, value: object) -> None: ...

    def check(self, section: str, ok: bool, what: str) -> None: ...


FLOOD_BYTES = 4 * 2**20
HALF_OPEN = 2000


def header_flood(self: SectionRunner) -> None:
    """One request whose header is 4 MiB long."""
    gateway = self.start("header_flood", {"fake": {}})
    try:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sent = 0

        def flood() -> None:
            nonlocal sent
            try:
                sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Big: ")
                while sent < FLOOD_BYTES:
                    sock.sendall(b"a" * 4096)
                    sent += 4096
            except OSError:
                pass

        started = time.monotonic()
        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        reply = closed_by_server(sock, within_s=10)
        closed_s = time.monotonic() - started
        sender.join(10)
        sock.close()
        alive = httpx.get(gateway.base_url + "/health").status_code == 200
    finally:
        gateway.stop()
    answer = "kept reading" if reply is None else (reply.split(b"\r\n")[0].decode() or "closed")
    self.figure("header_flood", "header bytes sent before the close (incl. socket buffers)", sent)
    self.figure("header_flood", "answer", answer)
    self.figure("header_flood", "time to the answer (s)", closed_s)
    self.figure("header_flood", "server healthy afterwards", alive)
    self.check("header_flood", reply is not None and sent < FLOOD_BYTES, "4 MiB header read")


def half_open(self: SectionRunner) -> None:
    """2,000 connections that send half a request line and stop (default 30 s deadline)."""
    gateway = self.start("half_open", {"fake": {}})
    socks: list[socket.socket] = []
    try:
        opened_at = time.monotonic()
        for _ in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            sock.sendall(b"POST /v1/embe")
            socks.append(sock)
        during = httpx.get(gateway.base_url + "/v1/models", headers=self.auth_headers, timeout=10)
        time.sleep(max(0.0, 30 + 5 - (time.monotonic() - opened_at)))
        left = sum(1 for sock in socks if closed_by_server(sock, within_s=0.01) is None)
        after = httpx.get(gateway.base_url + "/v1/models", headers=self.auth_headers, timeout=10)
    finally:
        for sock in socks:
            sock.close()
        gateway.stop()
    self.figure("half_open", "half-open connections opened", len(socks))
    self.figure(
        "half_open",
        "a request meanwhile (over the 1024 cap)",
        f"{during.status_code} {during.json().get('error', {}).get('code', '')}",
    )
    self.figure("half_open", "left open 35 s after (deadline 30 s)", left)
    self.figure("half_open", "a request afterwards", after.status_code)
    self.check("half_open", left == 0, f"{left} half-open connections left")
    self.check("half_open", after.status_code == 200, "not serving afterwards")


def _timed_until(
    predicate: Callable[[], bool], since: float, limit_s: float, poll_s: float = 0.05
) -> float:
    while time.monotonic() - since < limit_s:
        try:
            if predicate():
                return time.monotonic() - since
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    return float("inf")


def _state(gateway: Gateway, model: str) -> str:
    return httpx.get(gateway.base_url + "/ready", timeout=5).json()["models"][model]


class _Trickle:
    """Requests to one model every `period_s` from a thread, statuses kept with send times."""

    def __init__(self, gateway: Gateway, model: str, headers: dict, period_s: float) -> None:
        self.outcomes: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, args=(gateway, model, headers, period_s)
        )
        self._thread.start()

    def _run(self, gateway: Gateway, model: str, headers: dict, period_s: float) -> None:
        with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=90) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status: object = client.post(
                        "/v1/embeddings", json={"model": model, "input": ["heal"]}
                    ).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.outcomes.append((sent, status))
                self._stop.wait(period_s)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(120)
        counts: dict = {}
        for _, status in self.outcomes:
            counts[status] = counts.get(status, 0) + 1
        return counts


def heal(self: SectionRunner) -> None:
    """Fake engines: one of two models killed, then hung, then unable to restart."""
    fakes = {"a": {"latency_s": 0.05}, "b": {"latency_s": 0.05}}
    gateway = self.start(
        "heal",
        fakes,
        [
            "--health-check-interval-s",
            "2",
            "--health-check-timeout-s",
            "10",
            "--engine-restart-attempts",
            "3",
        ],
    )
    try:
        for fault in ("dead", "hang"):
            trickle_b = _Trickle(gateway, "b", self.auth_headers, 0.1)
            at = time.monotonic()
            gateway.control("a", dead=fault == "dead", hang=fault == "hang")
            detect = _timed_until(lambda: _state(gateway, "a") == "restarting", at, 60)
            back = _timed_until(lambda: _state(gateway, "a") == "ready", at, 120)
            other = trickle_b.stop()
            self.figure(
                "heal",
                f"{fault}: time to detect / to serve again (s)",
                f"{detect:.2f} / {back:.2f}",
            )
            self.figure("heal", f"{fault}: the other model meanwhile", other)
            self.check("heal", detect < 15 and back < 60, f"{fault}: {detect} / {back}")
            self.check("heal", set(other) == {200}, f"{fault}: other model {other}")
        at = time.monotonic()
        gateway.control("a", fail_start=True, dead=True, hang=False)
        down = _timed_until(
            lambda: httpx.get(gateway.base_url + "/health").status_code == 503, at, 120
        )
        self.figure("heal", "restarts fail (3 tries in a row): /health 503 after (s)", down)
        self.check("heal", down < 30, "/health never turned 503")
    finally:
        gateway.stop()


def real_heal(self: SectionRunner) -> None:
    """The real engine: EngineCore killed (SIGKILL), then stopped (SIGSTOP)."""
    models = [{"name": "minilm", "path": "builtin:all-MiniLM-L6-v2", "max_model_len": 128}]
    started = time.monotonic()
    gateway = start_gateway(
        self.workdir / "real_heal",
        models=models,
        ready_timeout=600,
        args=[
            "--api-key",
            self.key,
            "--log-level",
            "warning",
            "--engine-restart-backoff-s",
            "1",
            # The default until the idle-CPU measurement (now 10 s): the figures in the README
            # were taken with it, and a shorter period shows detection sooner.
            "--health-check-interval-s",
            "2",
        ],
    )
    self.figure("real_heal", "engine start (s)", time.monotonic() - started)
    try:
        for label, sig in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
            cores = [
                p
                for p in psutil.Process(gateway.process.pid).children(recursive=True)
                if "EngineCor" in p.name()
            ]
            trickle = _Trickle(gateway, "minilm", self.auth_headers, 0.2)
            time.sleep(2)
            at = time.monotonic()
            for core in cores:
                core.send_signal(sig)
            detect = _timed_until(lambda: _state(gateway, "minilm") == "restarting", at, 60)
            back = _timed_until(lambda: _state(gateway, "minilm") == "ready", at, 900, 0.5)
            time.sleep(1)
            statuses = trickle.stop()
            lost = sum(n for s, n in statuses.items() if s != 200)
            self.figure(
                "real_heal",
                f"{label}: time to detect / to serve again (s)",
                f"{detect:.2f} / {back:.1f}",
            )
            self.figure("real_heal", f"{label}: requests every 0.2 s meanwhile", statuses)
            self.figure("real_heal", f"{label}: requests not served (all 503, none hung)", lost)
            self.check("real_heal", bool(cores), "no EngineCore process found")
            self.check("real_heal", detect < 15, f"{label}: detected after {detect}")
            self.check("real_heal", back < 900, f"{label}: never back")
            self.check("real_heal", set(statuses) <= {200, 503}, f"{label}: {statuses}")
    finally:
        for core in psutil.Process(gateway.process.pid).children(recursive=True):
            if "EngineCor" in core.name():
                core.send_signal(signal.SIGCONT)
        code = gateway.stop(timeout=60)
    self.figure("real_heal", "exit code after SIGTERM", code)


def worker_restart(self: SectionRunner) -> None:
    """Two workers (fake engine); one killed with SIGKILL under a trickle of requests."""
    gateway = start_workers(
        self.workdir / "worker_restart",
        args=["--log-level", "warning", "--api-key", self.key],
        cpu=self.server_cpu,
    )
    url, process = gateway.base_url, gateway.process
    try:
        victim = worker_processes(gateway)[0]
        statuses: dict = {}

        def fresh_request(_: int) -> None:
            try:
                with httpx.Client() as client:  # a fresh connection: any worker
                    status: object = client.post(
                        url + "/v1/embeddings",
                        headers=self.auth_headers,
                        json={"model": "m", "input": "x"},
                    ).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1

        at = time.monotonic()
        victim.kill()
        with ThreadPoolExecutor(4) as pool:
            replaced = float("inf")
            while time.monotonic() - at < 60:
                list(pool.map(fresh_request, range(4)))
                now = worker_processes(gateway)
                if len(now) == 2 and victim not in now:
                    replaced = time.monotonic() - at
                    break
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    finally:
        gateway.stop()
    self.figure("worker_restart", "killed worker replaced after (s)", replaced)
    self.figure("worker_restart", "requests meanwhile (fresh connections)", statuses)
    self.figure("worker_restart", "supervisor exit code after SIGTERM", code)
    self.check("worker_restart", replaced < 30, "worker not replaced")
    self.check("worker_restart", set(statuses) == {200}, f"requests failed: {statuses}")


SECTIONS = ("header_flood", "half_open", "heal", "real_heal", "worker_restart")
