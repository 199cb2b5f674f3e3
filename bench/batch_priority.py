"""Interactive latency while a Batch API job runs, on the real engine (README "Bulk indexing").

    python -m bench.batch_priority [--requests 300] [-- GATEWAY OPTIONS...]

Starts one gateway serving the built-in MiniLM (with any gateway options given after `--`),
then measures single short /v1/embeddings requests:

- back to back (concurrency 1, `--requests` of them): idle, then while a large batch runs;
- spaced (`--spaced` of them, each 1.05-1.5 s after the previous answer, as a person
  searching might send them): idle, then while the batch runs;
- after a quiet spell (`--after-quiet` of them, each once no request has arrived for the
  gateway's `--batch-quiet-after-s`, when the batch has its larger budget) while the batch
  runs;
- for comparison, back to back while a bulk client sends the batch's lines straight to
  /v1/embeddings (4 concurrent requests; `--skip-direct` leaves it out).

The batch's throughput (inputs/s) is measured during each phase, and alone once the quiet
spell has passed. Prints and writes bench/results/batch_priority.json (or `--out`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.config import Settings
from harness.gateway import start_gateway
from harness.stats import percentile

MODEL = "all-MiniLM-L6-v2"
SENTENCE = (
    "Bulk indexing embeds a whole corpus of documents, each a sentence or two long, "
    "while the same server keeps answering interactive queries."
)
RESULTS = Path(__file__).parent / "results" / "batch_priority.json"


def latencies(url: str, n: int, gap_s: Callable[[], float] = lambda: 0.0) -> list[float]:
    """Milliseconds of `n` one-query requests, each sent `gap_s()` after the last answer."""
    out = []
    with httpx.Client(timeout=120) as client:
        for i in range(n):
            time.sleep(gap_s())
            started = time.perf_counter()
            response = client.post(url, json={"model": MODEL, "input": f"query {i}"})
            out.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return out


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p90_ms": round(percentile(values, 90), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


class Batch:
    """A running batch, and its completed inputs over time."""

    def __init__(self, client: openai.OpenAI, lines: str, inputs_per_line: int) -> None:
        self.client = client
        self.inputs_per_line = inputs_per_line
        file = client.files.create(file=("bulk.jsonl", io.BytesIO(lines.encode())), purpose="batch")
        self.id = client.batches.create(
            input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
        ).id

    def inputs_done(self) -> int:
        counts = self.client.batches.retrieve(self.id).request_counts
        assert counts is not None
        return counts.completed * self.inputs_per_line

    def rate_during(self, work: Callable[[], Any]) -> tuple[Any, float]:
        """`work()`'s result, and the batch's inputs per second meanwhile."""
        before, started = self.inputs_done(), time.monotonic()
        result = work()
        return result, round((self.inputs_done() - before) / (time.monotonic() - started), 1)

    def cancel(self) -> None:
        self.client.batches.cancel(self.id)
        while self.client.batches.retrieve(self.id).status != "cancelled":
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--spaced", type=int, default=30)
    parser.add_argument("--after-quiet", type=int, default=5)
    parser.add_argument("--lines", type=int, default=6000)
    parser.add_argument("--inputs-per-line", type=int, default=8)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("gateway_args", nargs="*", help="options for the gateway, after --")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-priority-"))
    gateway = start_gateway(
        work,
        models=[{"name": MODEL, "path": "builtin:" + MODEL}],
        args=["--batch-dir", str(work / "batches"), *args.gateway_args],
        ready_timeout=600,
    )
    url = gateway.base_url + "/v1/embeddings"
    body = {"model": MODEL, "input": [f"{SENTENCE} ({j})" for j in range(args.inputs_per_line)]}
    rng = random.Random(0)

    def spaced() -> float:
        return rng.uniform(1.05, 1.5)

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gateway_args": args.gateway_args,
        "requests": args.requests,
        "batch_lines": args.lines,
        "inputs_per_line": args.inputs_per_line,
    }
    try:
        latencies(url, 30)  # warm-up
        results["idle"] = summary(latencies(url, args.requests))
        results["idle_spaced"] = summary(latencies(url, args.spaced, spaced))

        with openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused") as client:
            lines = "\n".join(
                json.dumps(
                    {"custom_id": f"l{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
                )
                for i in range(args.lines)
            )
            batch = Batch(client, lines, args.inputs_per_line)
            while batch.inputs_done() < 20 * args.inputs_per_line:
                time.sleep(0.1)
            during, rate = batch.rate_during(lambda: latencies(url, args.requests))
            results["during_batch"] = summary(during)
            results["batch_inputs_per_s_during"] = rate
            during, rate = batch.rate_during(lambda: latencies(url, args.spaced, spaced))
            results["during_batch_spaced"] = summary(during)
            results["batch_inputs_per_s_during_spaced"] = rate
            quiet_s = quiet_after_s(args.gateway_args) + 0.5
            time.sleep(quiet_s)
            _, results["batch_inputs_per_s_alone"] = batch.rate_during(lambda: time.sleep(10))
            # The first one follows the 10 s alone: already past the quiet spell.
            gaps = iter([0.0] + [quiet_s] * (args.after_quiet - 1))
            results["during_batch_after_quiet"] = summary(
                latencies(url, args.after_quiet, lambda: next(gaps))
            )
            results["batch_finished_during_measurement"] = (
                batch.inputs_done() >= args.lines * args.inputs_per_line
            )
            batch.cancel()

        if not args.skip_direct:
            results["during_direct_bulk_client"] = summary(direct_bulk(url, body, args.requests))
    finally:
        gateway.stop()
    for name in ("", "_spaced"):
        results[f"ratio_p99{name}_batch_vs_idle"] = round(
            results[f"during_batch{name}"]["p99_ms"] / results[f"idle{name}"]["p99_ms"], 2
        )
    # Requests after a quiet spell are spaced requests: their worst against spaced idle p99.
    results["ratio_max_after_quiet_vs_spaced_idle_p99"] = round(
        results["during_batch_after_quiet"]["max_ms"] / results["idle_spaced"]["p99_ms"], 2
    )
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def quiet_after_s(gateway_args: list[str]) -> float:
    """The gateway's --batch-quiet-after-s: given after `--`, else its default."""
    if "--batch-quiet-after-s" in gateway_args:
        return float(gateway_args[gateway_args.index("--batch-quiet-after-s") + 1])
    return Settings().batch_quiet_after_s


def direct_bulk(url: str, body: dict[str, Any], requests: int) -> list[float]:
    """Query latencies while 4 threads send `body` to /v1/embeddings back to back."""
    stop = threading.Event()

    def bulk() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                client.post(url, json=body)

    threads = [threading.Thread(target=bulk) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        return latencies(url, requests)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


if __name__ == "__main__":
    main()
