"""Interactive latency while a Batch API job runs, on the real engine (README "Bulk indexing").

    flock /tmp/engine-tests.lock python -m bench.batch_priority [--requests 300]

Starts one gateway serving the built-in MiniLM, then measures single short /v1/embeddings
requests at concurrency 1: idle; while a large batch runs; and, for comparison, while a bulk
client sends the same work straight to /v1/embeddings (4 concurrent requests). Prints and
writes bench/results/batch_priority.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai

from reliability.server import start_gateway

MODEL = "all-MiniLM-L6-v2"
SENTENCE = (
    "Bulk indexing embeds a whole corpus of documents, each a sentence or two long, "
    "while the same server keeps answering interactive queries."
)


def latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            started = time.perf_counter()
            response = client.post(url, json={"model": MODEL, "input": f"query {i}"})
            out.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return out


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p90_ms": round(float(np.percentile(values, 90)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(np.max(values)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--inputs-per-line", type=int, default=8)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "batch_priority.json")
    )
    parser.add_argument("gateway_args", nargs="*")
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
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "requests": args.requests,
        "batch_lines": args.lines,
        "inputs_per_line": args.inputs_per_line,
    }
    try:
        latencies(url, 30)  # warm-up
        results["idle"] = summary(latencies(url, args.requests))

        with openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused") as client:
            lines = "\n".join(
                json.dumps(
                    {"custom_id": f"l{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
                )
                for i in range(args.lines)
            )
            file = client.files.create(
                file=("bulk.jsonl", io.BytesIO(lines.encode())), purpose="batch"
            )
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
            )
            while client.batches.retrieve(batch.id).request_counts.completed < 20:
                time.sleep(0.1)
            before, started = (
                client.batches.retrieve(batch.id).request_counts.completed,
                time.monotonic(),
            )
            during = latencies(url, args.requests)
            done = client.batches.retrieve(batch.id).request_counts.completed
            elapsed = time.monotonic() - started
            time.sleep(10)  # the batch alone
            alone = client.batches.retrieve(batch.id).request_counts.completed - done
            results["during_batch"] = summary(during)
            results["batch_inputs_per_s_during"] = round(
                (done - before) * args.inputs_per_line / elapsed, 1
            )
            results["batch_inputs_per_s_alone"] = round(alone * args.inputs_per_line / 10, 1)
            results["batch_finished_during_measurement"] = done >= args.lines
            client.batches.cancel(batch.id)
            while client.batches.retrieve(batch.id).status != "cancelled":
                time.sleep(0.2)

        if not args.skip_direct:
            stop = threading.Event()

            def bulk() -> None:
                with httpx.Client(timeout=120) as client:
                    while not stop.is_set():
                        client.post(url, json=body)

            threads = [threading.Thread(target=bulk) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2)
            results["during_direct_bulk_client"] = summary(latencies(url, args.requests))
            stop.set()
            for thread in threads:
                thread.join()
    finally:
        gateway.stop()
    results["ratio_p99_batch_vs_idle"] = round(
        results["during_batch"]["p99_ms"] / results["idle"]["p99_ms"], 2
    )
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
