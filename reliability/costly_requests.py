"""Costly requests against a running gateway, measured from outside: while each one runs,
`/health` is asked every 10 ms on its own connection (the longest answer is how long the
request held the event loop) and the server's RSS is sampled (the peak growth is what the
request made it hold). `python -m reliability.costly_requests` runs them against a real engine
(`make run`'s default model, one worker) and writes `results/costs.json` and README's
`costs` section; the battery's `costs` section and tests/reliability/test_costly_requests.py
run the same requests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from harness.gateway import start_gateway
from harness.markers import write_section
from harness.paths import REPO

RESULTS = REPO / "reliability" / "results" / "costs.json"
SECTION = "costs"
TARGETS = ("docs/reliability.md",)


def costly_requests(model: str) -> dict[str, tuple[str, dict | bytes]]:
    """Requests that are cheap to send and dear to serve: name -> (path, body)."""
    numbers = " ".join(str(i) for i in range(60_000))
    # Written by hand: orjson itself refuses to write 300 levels.
    nested = ('{"text":"deep","child":' + '{"child":' * 298 + "{}" + "}" * 299).encode()
    return {
        "7 MB input, truncate end": (
            "/v1/embeddings",
            {"model": model, "input": "* " * 3_500_000, "truncate": "end"},
        ),
        "100,000 cl100k ids (72 chars each)": (
            "/v1/embeddings",
            {"model": model, "input": [[5713] * 100_000]},
        ),
        "rerank 4 x 60,000 numbers, 1 token per chunk": (
            "/v1/rerank",
            {
                "model": model,
                "query": "which number",
                "documents": [numbers] * 4,
                "max_tokens_per_doc": 1,
            },
        ),
        "rerank document nested 300 levels": (
            "/v1/rerank",
            b'{"model":'
            + orjson.dumps(model)
            + b',"query":"q","return_documents":true,'
            + b'"documents":['
            + nested
            + b"]}",
        ),
    }


@dataclass
class Cost:
    name: str
    body_mb: float
    status: int
    answer_s: float
    health_max_ms: float
    health_polls: int
    rss_growth_mb: float


def measure(base_url: str, pid: int, name: str, path: str, body: dict | bytes) -> Cost:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    process = psutil.Process(pid)
    before = process.memory_info().rss
    peak = before
    done = threading.Event()
    answer: list[Any] = []

    def send() -> None:
        try:
            with httpx.Client(timeout=300) as client:
                began = time.monotonic()
                response = client.post(
                    base_url + path, content=data, headers={"content-type": "application/json"}
                )
                answer.extend([response.status_code, time.monotonic() - began])
        finally:
            done.set()

    waits: list[float] = []
    with httpx.Client(timeout=60) as health:
        health.get(base_url + "/health")  # the connection is open before the request starts
        sender = threading.Thread(target=send)
        sender.start()
        while not done.is_set():
            began = time.monotonic()
            health.get(base_url + "/health")
            waits.append(time.monotonic() - began)
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)
        sender.join()
    return Cost(
        name=name,
        body_mb=len(data) / 2**20,
        status=answer[0],
        answer_s=answer[1],
        health_max_ms=max(waits) * 1000,
        health_polls=len(waits),
        rss_growth_mb=(peak - before) / 2**20,
    )


def measure_all(base_url: str, pid: int, model: str) -> list[Cost]:
    return [
        measure(base_url, pid, name, path, body)
        for name, (path, body) in costly_requests(model).items()
    ]


def rows(costs: list[Cost]) -> list[tuple[str, str, str]]:
    """The battery's (section, figure, value) rows."""
    return [
        (
            "costs",
            c.name,
            (
                f"{c.status} in {c.answer_s:.2f} s; /health max "
                f"{c.health_max_ms:.0f} ms ({c.health_polls} polls); RSS +{c.rss_growth_mb:.0f} MB "
                f"(body {c.body_mb:.1f} MB)"
            ),
        )
        for c in costs
    ]


def markdown(saved: dict) -> str:
    lines = [
        (
            f"Run {saved['date_utc']} UTC (`{saved['command']}`), {saved['engine']}, "
            f"{saved['cpus']} CPUs shared with other work (latencies are noisy):"
        ),
        "",
        (
            "| request | answer | time to answer (s) | max /health latency (ms) | "
            "/health polls | RSS growth (MB) | body (MB) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['name']} | {c['status']} | {c['answer_s']:.2f} | "
        f"{c['health_max_ms']:.0f} | {c['health_polls']} | {c['rss_growth_mb']:.0f} | "
        f"{c['body_mb']:.1f} |"
        for c in saved["costs"]
    ]
    return "\n".join(lines) + "\n"


def render_saved() -> str:
    return markdown(json.loads(RESULTS.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake", action="store_true", help="the fake engine instead of vLLM")
    args = parser.parse_args(argv)
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="costs-") as tmp:
        if args.fake:
            gateway = start_gateway(Path(tmp), fake_models={"m": {}})
            model, engine = "m", "fake engine"
        else:
            gateway = start_gateway(
                Path(tmp),
                models=[{"name": "all-MiniLM-L6-v2", "path": "builtin:all-MiniLM-L6-v2"}],
                args=["--workers", "1"],
                ready_timeout=600,
            )
            model, engine = "all-MiniLM-L6-v2", "vLLM CPU engine, all-MiniLM-L6-v2, 1 worker"
        try:
            costs = measure_all(gateway.base_url, gateway.process.pid, model)
        finally:
            gateway.stop()
    saved = {
        "costs": [asdict(c) for c in costs],
        "engine": engine,
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(began)),
        "command": " ".join(["python -m reliability.costly_requests", *(argv or sys.argv[1:])]),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=1))
    text = markdown(saved)
    print(text)
    for target in TARGETS:
        write_section(REPO / target, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
