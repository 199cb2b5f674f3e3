"""Hostile requests and injected faults, one function per attack, each returning its figures
(a dict of name -> value) so that any harness can tabulate them; `main` prints them all as
JSON. Gateways are fake-engine processes (real sockets) or in-process apps whose batch store
is wrapped to fail on demand.

    python -m reliability.attacks [name ...]

Each attack is also a section of reliability/battery.py (`SECTIONS`, `battery_method`).

The figures to watch: `tokenize_flood` (answer size and the longest /health wait while it
runs), `runner_store_fault` (the Files API after a store error), `line_record_fault` and
`output_amplification` (counts and bytes a batch ends with), `half_open_flood` (a request
among thousands of half-open connections) and `probes_at_cap` (/health with every
connection busy).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from harness.gateway import Gateway, start_gateway
from harness.raw_http import closed_by_server

Figures = dict[str, Any]
KEY = "attack-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


# -- request cost -----------------------------------------------------------------------------


def tokenize_flood(text_bytes: int = 1_000_000) -> Figures:
    """One `/tokenize` of a text of `text_bytes` ("a a a ..."), TEI's and vLLM's form, and
    one `/detokenize` of as many ids, each while /health is polled: status, answer bytes,
    seconds, the longest /health wait."""
    text = "a " * (text_bytes // 2)
    figures: Figures = {}
    with _gateway("tokenize", []) as gateway:
        for name, path, body in (
            ("tei_tokenize", "/tokenize", {"inputs": text}),
            ("vllm_tokenize", "/tokenize", {"prompt": text}),
            ("detokenize", "/detokenize", {"tokens": [5] * (text_bytes // 2)}),
        ):
            status, size, seconds, stall = _while_polling_health(gateway, path, body)
            figures.update(
                {
                    f"{name} status": status,
                    f"{name} answer bytes": size,
                    f"{name} seconds": round(seconds, 3),
                    f"{name} longest /health wait (s)": round(stall, 3),
                }
            )
    return figures


def _while_polling_health(
    gateway: Gateway, path: str, body: dict[str, Any]
) -> tuple[int, int, float, float]:
    done = threading.Event()
    waits: list[float] = []

    def poll() -> None:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
            while not done.is_set():
                started = time.monotonic()
                client.get("/health")
                waits.append(time.monotonic() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.1)
    started = time.monotonic()
    response = httpx.post(gateway.base_url + path, json=body, headers=AUTH, timeout=120)
    seconds = time.monotonic() - started
    done.set()
    poller.join(30)
    return response.status_code, len(response.content), seconds, max(waits, default=0.0)


# -- the batch runner, in process -------------------------------------------------------------


class FaultyStore:
    """A batch store whose chosen methods raise for their next `times` calls."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._faults: dict[str, tuple[list[int], Exception, Callable[..., bool]]] = {}

    def fail(
        self,
        method: str,
        times: int,
        error: Exception,
        when: Callable[..., bool] = lambda *args, **kwargs: True,
    ) -> None:
        self._faults[method] = ([times], error, when)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._faults:
            return attr
        left, error, when = self._faults[name]

        def faulty(*args: Any, **kwargs: Any) -> Any:
            if left[0] > 0 and when(*args, **kwargs):
                left[0] -= 1
                raise error
            return attr(*args, **kwargs)

        return faulty


@contextmanager
def _app(**options: Any) -> Iterator[Any]:
    """An in-process app (fake engine) with its own batch folder; yields the TestClient."""
    from starlette.testclient import TestClient

    from adapters.fake import FakeEngine
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.serving.registry import ModelRegistry, ServedModel

    with tempfile.TemporaryDirectory(prefix="attacks-") as folder:
        settings = Settings(api_keys=(KEY,), batch_dir=folder, **options)
        registry = ModelRegistry([ServedModel("fake", (), FakeEngine())])
        app = create_app(registry, settings)
        with TestClient(app, raise_server_exceptions=False) as client:
            deadline = time.monotonic() + 10
            while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            yield client


def _lines(*bodies: dict[str, Any]) -> bytes:
    return b"".join(
        json.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
        ).encode()
        + b"\n"
        for i, body in enumerate(bodies)
    )


def _run_batch(client: Any, content: bytes, timeout_s: float = 30) -> dict[str, Any]:
    """The batch's final object; `status` says which call failed if one did."""
    uploaded = client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=AUTH
    )
    if uploaded.status_code != 200:
        return {"status": f"upload answered {uploaded.status_code}", "request_counts": {}}
    created = client.post(
        "/v1/batches",
        headers=AUTH,
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
        },
    )
    if created.status_code != 200:
        return {"status": f"create answered {created.status_code}", "request_counts": {}}
    batch = created.json()
    deadline = time.monotonic() + timeout_s
    while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
        if time.monotonic() > deadline:
            batch["status"] += f" after {timeout_s:g} s"
            break
        time.sleep(0.05)
        polled = client.get(f"/v1/batches/{batch['id']}", headers=AUTH)
        if polled.status_code != 200:
            return {"status": f"retrieve answered {polled.status_code}", "request_counts": {}}
        batch = polled.json()
    return dict(batch)


def _wrap_store(client: Any) -> FaultyStore:
    service = client.app.state.gateway["batches"]
    wrapped = FaultyStore(service.store)
    service._store = wrapped
    return wrapped


def runner_store_fault() -> Figures:
    """`claim()` raises "database or disk is full" once: does a batch still run, and do the
    Files and Batches routes still answer?"""
    with _app() as client:
        client.post(
            "/v1/files",
            files={"file": ("a.jsonl", b"{}\n")},
            data={"purpose": "batch"},
            headers=AUTH,
        )
        store = _wrap_store(client)
        store.fail("claim", 1, sqlite3.OperationalError("database or disk is full"))
        batch = _run_batch(client, _lines({"model": "fake", "input": "a"}), timeout_s=15)
        return {
            "batch status": batch["status"],
            "GET /v1/files": client.get("/v1/files", headers=AUTH).status_code,
            "GET /v1/batches": client.get("/v1/batches", headers=AUTH).status_code,
            "GET /health": client.get("/health").status_code,
            "GET /ready": client.get("/ready").status_code,
        }


def line_record_fault() -> Figures:
    """`record_line` raises for line 2's result: the batch's final status and counts."""
    with _app() as client:
        client.post(
            "/v1/files",
            files={"file": ("a.jsonl", b"{}\n")},
            data={"purpose": "batch"},
            headers=AUTH,
        )
        store = _wrap_store(client)
        store.fail(
            "record_line",
            1,
            sqlite3.OperationalError("disk I/O error"),
            when=lambda batch_id, line, **kw: line == 2 and kw.get("ok", False),
        )
        batch = _run_batch(client, _lines(*({"model": "fake", "input": f"t{i}"} for i in range(3))))
        return {"batch status": batch["status"], **batch["request_counts"]}


def output_amplification(inputs_per_line: int = 2048, lines: int = 3, **options: Any) -> Figures:
    """`lines` lines of `input: ["a"] * inputs_per_line`: upload and output bytes."""
    content = _lines(*({"model": "fake", "input": ["a"] * inputs_per_line} for _ in range(lines)))
    with _app(**options) as client:
        batch = _run_batch(client, content, timeout_s=60)
        output = 0
        if batch.get("output_file_id"):
            output = len(
                client.get(f"/v1/files/{batch['output_file_id']}/content", headers=AUTH).content
            )
        errors = (batch.get("errors") or {}).get("data") or [{}]
        return {
            "upload bytes": len(content),
            "output bytes": output,
            "batch status": batch["status"],
            "error code": errors[0].get("code"),
        }


# -- connections ------------------------------------------------------------------------------


def half_open_flood(connections: int = 2000, max_connections: int | None = None) -> Figures:
    """`connections` connections that each send a request line and stop; then one normal
    request: its status and seconds."""
    args = [] if max_connections is None else ["--max-connections", str(max_connections)]
    socks: list[socket.socket] = []
    with _gateway("half-open", args) as gateway:
        try:
            for _ in range(connections):
                try:
                    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
                    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\n")
                    socks.append(sock)
                except OSError:
                    break
            time.sleep(0.5)
            started = time.monotonic()
            try:
                status: int | str = httpx.post(
                    gateway.base_url + "/v1/embeddings",
                    json={"model": "fake", "input": "a"},
                    headers=AUTH,
                    timeout=60,
                ).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            seconds = time.monotonic() - started
            closed = sum(closed_by_server(s, within_s=0.001) is not None for s in socks)
        finally:
            for sock in socks:
                sock.close()
    return {
        "half-open connections opened": len(socks),
        "a request meanwhile": status,
        "its seconds": round(seconds, 3),
        "half-open connections closed by the server": closed,
    }


def probes_at_cap(max_connections: int = 8) -> Figures:
    """`max_connections` connections each with a request in flight (head sent, body not),
    then /health, /ready and /v1/models on a new connection."""
    socks: list[socket.socket] = []
    with _gateway("probes", ["--max-connections", str(max_connections)]) as gateway:
        try:
            for _ in range(max_connections):
                sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
                sock.sendall(
                    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + KEY.encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                )
                socks.append(sock)
            time.sleep(0.3)
            return {
                path: httpx.get(gateway.base_url + path, headers=AUTH, timeout=10).status_code
                for path in ("/health", "/ready", "/v1/models")
            }
        finally:
            for sock in socks:
                sock.close()


@contextmanager
def _gateway(name: str, args: list[str]) -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix=f"attacks-{name}-") as folder:
        key_file = Path(folder) / "keys"
        key_file.write_text(KEY + "\n")
        gateway = start_gateway(
            Path(folder) / "gateway",
            fake_models={"fake": {}},
            args=["--api-key-file", str(key_file), *args],
        )
        try:
            yield gateway
        finally:
            gateway.stop()


ATTACKS: dict[str, Callable[[], Figures]] = {
    "tokenize_flood": tokenize_flood,
    "runner_store_fault": runner_store_fault,
    "line_record_fault": line_record_fault,
    "output_amplification": output_amplification,
    "half_open_flood": half_open_flood,
    "probes_at_cap": probes_at_cap,
}


# What each attack's figures must show for the gateway to pass: (check, what failed).
EXPECTED: dict[str, tuple[Callable[[Figures], bool], str]] = {
    "tokenize_flood": (
        lambda f: (
            all(f[f"{n} status"] in (400, 422) for n in ("tei_tokenize", "vllm_tokenize"))
            and f["tei_tokenize longest /health wait (s)"] < 0.5
        ),
        "a 1 MB /tokenize was served, or held /health up",
    ),
    "runner_store_fault": (
        lambda f: f["batch status"] == "completed" and f["GET /v1/files"] == 200,
        "one store error stopped the batch runner",
    ),
    "line_record_fault": (
        lambda f: f.get("completed", 0) + f.get("failed", 0) == f.get("total", -1),
        "a line whose record failed was lost",
    ),
    "output_amplification": (
        lambda f: f["batch status"] == "completed" or f["error code"] == "output_too_large",
        "the batch neither completed nor failed on the output cap",
    ),
    "half_open_flood": (
        lambda f: f["a request meanwhile"] == 200,
        "half-open connections kept a request out",
    ),
    "probes_at_cap": (
        lambda f: f["/health"] == 200 and f["/ready"] == 200,
        "a probe was refused at the connection cap",
    ),
}


def record(battery: Any, name: str) -> Figures:
    """Run attack `name` as a battery section: its figures through `battery.figure`, its
    expectation through `battery.check` (the `Battery` of reliability/battery.py)."""
    figures = ATTACKS[name]()
    for figure, value in figures.items():
        battery.figure(name, figure, value)
    check, failed = EXPECTED[name]
    battery.check(name, check(figures), failed)
    return figures


SECTIONS = tuple(ATTACKS)


def battery_method(name: str) -> Callable[[Any], Figures]:
    """A `Battery` method that runs attack `name` as its section (`record`)."""

    def method(battery: Any) -> Figures:
        return record(battery, name)

    method.__name__ = name
    method.__doc__ = ATTACKS[name].__doc__
    return method


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(ATTACKS)
    for name in names:
        print(json.dumps({name: ATTACKS[name]()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
