"""Batch API throughput of a fleet: lines/s with one replica and with two on one PostgreSQL
database and one shared folder (docs/scaling.md, "A fleet sharing the Batch API").

    python -m bench.batch_fleet [--batches 4] [--lines 400] [--latency-s 0.05]

Starts a throwaway PostgreSQL server (harness/postgres.py) and, for 1 and then 2 replicas,
that many gateway processes over the fake engine (each engine call takes `--latency-s`), all
on a fresh database. Creates `--batches` batches of `--lines` one-input lines, alternating
between the replicas, then the same lines as one batch, and times each from the first create
to the last completion. Prints and writes bench/results/batch_fleet.json (or `--out`), with
the date and the machine's load average and core count beside the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from harness.gateway import Gateway, start_gateway
from harness.postgres import fresh_database, postgres_server

RESULTS = Path(__file__).parent / "results" / "batch_fleet.json"


def _client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=2)


def run(replicas: int, server: str, batches: int, lines: int, latency_s: float) -> dict[str, Any]:
    """Lines/s of `batches` batches on `replicas` gateways sharing a fresh database."""
    url = fresh_database(server)
    body = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "fake", "input": f"text {i}"},
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        root = Path(folder)
        args = ["--batch-dir", str(root / "shared"), "--batch-database-url", url]
        gateways = [
            start_gateway(root / f"r{n}", fake_models={"fake": {"latency_s": latency_s}}, args=args)
            for n in range(replicas)
        ]
        clients = [_client(gateway) for gateway in gateways]
        try:
            file_id = (
                clients[0].files.create(file=("lines.jsonl", io.BytesIO(body)), purpose="batch").id
            )
            started = time.perf_counter()
            ids = [
                clients[n % replicas]
                .batches.create(
                    input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
                )
                .id
                for n in range(batches)
            ]
            while True:
                states = [clients[0].batches.retrieve(batch_id).status for batch_id in ids]
                if all(state == "completed" for state in states):
                    break
                if any(state in ("failed", "cancelled", "expired") for state in states):
                    raise RuntimeError(f"a batch ended {states}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            for client in clients:
                client.close()
            for gateway in gateways:
                gateway.stop()
        # Engine calls beyond one per line, or a lease handed over, would explain a slow run.
        calls = [gateway.stats("fake").get("calls", 0) for gateway in gateways]
        handovers = sum(gateway.log().count("lease lost") for gateway in gateways)
    return {
        "replicas": replicas,
        "batches": batches,
        "lines": batches * lines,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(batches * lines / elapsed, 1),
        "engine_calls_per_replica": calls,
        "leases_lost": handovers,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    load_before = os.getloadavg()
    # The same lines as `--batches` batches and as one batch: a batch advances on every
    # replica at once, so one batch speeds up with a second replica too.
    shapes = [(options.batches, options.lines), (1, options.batches * options.lines)]
    with postgres_server() as server:
        rows = [
            run(n, server, batches, lines, options.latency_s)
            for batches, lines in shapes
            for n in (1, 2)
        ]
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["python -m bench.batch_fleet", *(argv if argv is not None else sys.argv[1:])]
        ),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "batches": options.batches,
        "lines_per_batch": options.lines,
        "engine_latency_s": options.latency_s,
        "runs": rows,
    }
    print(json.dumps(result, indent=2))
    options.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
