"""What OpenTelemetry tracing costs a request: the benchmark's null-engine cell (bench/run.py
`null_engine`: the gateway on `--engine fake`, single short inputs at c=1 and c=32) with
tracing off, then on (`--otlp-endpoint` to a local OTLP/HTTP sink that answers 200 and
keeps nothing), alternating, `--rounds` times each.

    python -m bench.tracing_cost [--duration 5] [--rounds 2]

Server CPU per request (microseconds; the gateway process, from psutil) is the figure that
says what tracing adds; requests per second and p50 move with whatever else the machine runs.
Each round is printed, then the median of the rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import cells as C
from bench.run import corpus, null_engine
from gateway.config import resolve_model_path
from harness.launch import free_port, spawn, stop, wait_ready
from harness.stats import percentile

_FIGURES = ("requests_per_s", "p50_ms", "p99_ms", "cpu_us")


def sink(port: int) -> None:
    """An OTLP/HTTP receiver that reads and drops every export (GET answers 200: ready)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._empty("application/x-protobuf")

        def do_GET(self) -> None:
            self._empty("text/plain")

        def _empty(self, media_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def figures(cell: dict[str, Any]) -> dict[str, float]:
    """A cell's figures, with server CPU per request: percent of one core over req/s."""
    cpu_us = float(cell["server_cpu_pct"]) / 100 / float(cell["requests_per_s"]) * 1e6
    return {**{k: float(cell[k]) for k in _FIGURES[:3]}, "cpu_us": cpu_us}


def _row(label: str, concurrency: int | str, values: dict[str, float]) -> str:
    return (
        f"| {label} | {concurrency} | {values['requests_per_s']:,.0f} | {values['p50_ms']:.2f} | "
        f"{values['p99_ms']:.2f} | {values['cpu_us']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    texts, tokens = corpus(resolve_model_path("builtin:" + C.MODEL_NAME))
    logs = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    port = free_port()
    command = [sys.executable, "-m", "bench.tracing_cost", "--sink", str(port)]
    receiver = spawn(command, logs / "sink.log")
    on = [f"--otlp-endpoint=http://127.0.0.1:{port}"]
    rounds: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}/", receiver, logs / "sink.log", timeout_s=30)
        for _ in range(args.rounds):
            for label, extra in (("off", []), ("on", on)):
                result = null_engine(texts, tokens, args.duration, logs, extra)
                for concurrency in (1, 32):
                    cell = figures(result[f"c{concurrency}"])
                    rounds.setdefault((label, concurrency), []).append(cell)
    finally:
        stop(receiver)
    print("\n| tracing | c | req/s | p50 ms | p99 ms | server CPU us/request |")
    print("|---|---|---|---|---|---|")
    for (label, concurrency), cells in rounds.items():
        for cell in cells:
            print(_row(label, concurrency, cell))
    print("\nMedian of the rounds:\n")
    print("| tracing | c | req/s | p50 ms | p99 ms | server CPU us/request |")
    print("|---|---|---|---|---|---|")
    for (label, concurrency), cells in sorted(rounds.items(), key=lambda kv: kv[0][1]):
        median = {k: percentile((c[k] for c in cells), 50) for k in _FIGURES}
        print(_row(label, concurrency, median))


if __name__ == "__main__":
    main()
