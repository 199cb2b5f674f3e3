"""Bulk indexing: `embedding-gateway embed` against the engine's ceiling and an HTTP loop.

    python -m bench.bulk [--documents 10000] [--out bench/results/bulk.json]

On one deterministic corpus (documents of 20-120 words, seeded), one after another so that
none shares the cores with another:

- `engine ceiling`: vLLM's AsyncLLM alone, every text tokenized in one call and issued at once
  (`bench.inprocess engine`, with the gateway's engine arguments and CPU thread binding).
- `embed CLI`: `python -m gateway embed corpus.txt --output vectors.npy`, timed from its engine
  being ready to the output written (its own summary line), and as a whole process.
- `HTTP, sequential`: the openai client sending batches of 64 one after another to
  `python -m gateway serve` (what a simple indexing script does), after one warm-up request.

The CLI's vectors are compared with the HTTP API's. Prints a table; writes the JSON.

`--sweep` instead starts one engine in this process (the gateway's adapter, as the CLI builds
it) and times, on the same corpus, the adapter fed every text in one call, then the CLI's
pipeline (`gateway.bulk.pipeline.run`, results discarded) at several batch sizes and numbers
of batches in flight: what keeps the engine busy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.servers import gateway_launch
from harness.launch import free_port, running
from harness.paths import REPO

MODEL = "all-MiniLM-L6-v2"
# Ordinary English words: the texts tokenize like prose (about 1.2 tokens per word).
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "have",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "two",
    "also",
    "been",
    "more",
    "city",
    "year",
    "world",
    "time",
    "people",
    "state",
    "water",
    "system",
    "school",
    "group",
    "music",
    "house",
    "government",
    "company",
    "market",
    "history",
    "family",
    "village",
    "river",
    "country",
    "party",
    "church",
    "science",
    "power",
    "energy",
    "field",
    "light",
    "small",
    "large",
    "early",
    "local",
    "public",
    "major",
    "common",
    "often",
    "known",
    "later",
    "under",
    "between",
    "during",
    "several",
    "north",
    "south",
    "river",
    "mountain",
    "island",
    "valley",
    "forest",
    "garden",
    "station",
    "bridge",
    "museum",
    "library",
    "theatre",
    "football",
    "season",
    "league",
    "player",
    "team",
    "coach",
    "record",
    "album",
    "song",
    "film",
    "series",
    "episode",
    "novel",
    "author",
    "language",
    "culture",
    "region",
    "island",
    "border",
    "trade",
    "money",
    "bank",
    "price",
    "value",
    "growth",
    "health",
    "disease",
    "medicine",
    "doctor",
    "patient",
    "hospital",
    "study",
    "research",
    "report",
    "design",
    "model",
    "process",
    "method",
    "result",
    "data",
    "computer",
    "network",
    "software",
    "program",
    "engine",
    "machine",
    "vehicle",
    "road",
    "railway",
    "airport",
    "harbour",
]


def corpus(documents: int, seed: int = 12) -> list[str]:
    """`documents` texts of 20-120 words, the same for a given seed on every machine."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choices(_WORDS, k=rng.randint(20, 120))).capitalize() + "."
        for _ in range(documents)
    ]


def cpu_binding_env() -> dict[str, str]:
    """The environment the gateway's engines get (--cpu-threads all), for the ceiling."""
    from adapters.vllm import engine_environment

    return {**engine_environment("all"), "HF_HUB_OFFLINE": "1"}


def ceiling(texts: list[str], folder: Path) -> dict:
    texts_file, out_file = folder / "texts.json", folder / "ceiling.json"
    texts_file.write_text(json.dumps({"sets": {"bulk": texts}}))
    subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "engine", str(texts_file), str(out_file)],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, **cpu_binding_env()},
    )
    got = json.loads(out_file.read_text())["bulk"]
    return {"seconds": got["seconds"], "docs_per_s": got["texts_per_s"], "tokens": got["tokens"]}


_SUMMARY = re.compile(r"embedded ([\d,]+) documents \(([\d,]+) tokens\) in ([\d.]+) s")


def cli(corpus_file: Path, folder: Path, extra: list[str]) -> dict:
    output = folder / "vectors.npy"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "embed",
            str(corpus_file),
            "--output",
            str(output),
            "--progress",
            "log",
            *extra,
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"embed CLI failed ({done.returncode}):\n{done.stderr[-3000:]}")
    match = _SUMMARY.search(done.stderr)
    assert match, done.stderr[-2000:]
    documents, tokens, seconds = (float(g.replace(",", "")) for g in match.groups())
    return {
        "seconds": seconds,
        "docs_per_s": documents / seconds,
        "tokens": int(tokens),
        "process_seconds": wall,
        "vectors": np.load(output),
    }


def http_sequential(texts: list[str], folder: Path, batch: int = 64) -> dict:
    from openai import OpenAI

    port = free_port()
    with running(gateway_launch(port), port, folder / "logs"):
        client = OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600
        )
        client.embeddings.create(model=MODEL, input=texts[:batch])  # warm-up
        started = time.perf_counter()
        rows = []
        for i in range(0, len(texts), batch):
            answer = client.embeddings.create(model=MODEL, input=texts[i : i + batch])
            rows.extend(item.embedding for item in answer.data)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "vectors": np.asarray(rows, dtype=np.float32),
    }


SWEEP = ((1024, 4), (2048, 2), (2048, 4), (4096, 2), (4096, 4), (8192, 2), (16384, 2), (16384, 4))


def sweep(texts: list[str]) -> dict:
    """Seconds for the adapter fed everything at once, then per (batch tokens, in flight)."""
    import asyncio

    from adapters.vllm import configure_cpu_threads
    from gateway.bulk.pipeline import Job, run
    from gateway.cli import build_registry
    from gateway.config import load_settings

    async def measure() -> dict:
        configure_cpu_threads("all")
        registry = build_registry(load_settings({}, {}))
        assert await registry.start_all(), registry.models[0].failure
        served = registry.models[0]
        try:
            await served.engine.embed(texts[:256])  # warm-up
            started = time.perf_counter()
            await served.engine.embed(texts)
            out = {"adapter, all at once": time.perf_counter() - started}
            for tokens, inflight in SWEEP:
                job = Job(served, served.name, batch_tokens=tokens, inflight=inflight)
                started = time.perf_counter()
                await run(job, enumerate(texts), 0, lambda result: None)
                out[f"pipeline {tokens} tokens x {inflight} in flight"] = (
                    time.perf_counter() - started
                )
            return out
        finally:
            await registry.shutdown_all()

    seconds = asyncio.run(measure())
    top = len(texts) / seconds["adapter, all at once"]
    print("\n| feeding | seconds | docs/s | vs all at once |\n|---|---:|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.1f} | {len(texts) / s:.1f} | {len(texts) / s / top:.2f}x |")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument(
        "--cli-arg",
        action="append",
        default=[],
        help="extra argument for `gateway embed` (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bulk.json")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="time the pipeline's feeding settings in one engine instead",
    )
    args = parser.parse_args(argv)
    texts = corpus(args.documents)
    if args.sweep:
        print(f"# bulk sweep: {len(texts):,} documents; load average {os.getloadavg()}")
        sweep(texts)
        print(f"load average at end {os.getloadavg()}")
        return 0
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus_file = folder / "corpus.txt"
        corpus_file.write_text("\n".join(texts) + "\n")
        print(
            f"# bulk: {len(texts):,} documents, {sum(len(t.split()) for t in texts):,} "
            f"words; load average {load_start}",
            flush=True,
        )
        results = {"engine ceiling": ceiling(texts, folder)}
        print("engine ceiling done", flush=True)
        results["embed CLI"] = cli(corpus_file, folder, args.cli_arg)
        print("embed CLI done", flush=True)
        results["HTTP, sequential (openai, batches of 64)"] = http_sequential(texts, folder)
    cli_vectors = results["embed CLI"].pop("vectors")
    http_vectors = results["HTTP, sequential (openai, batches of 64)"].pop("vectors")
    cosine = np.sum(cli_vectors * http_vectors, axis=1) / (
        np.linalg.norm(cli_vectors, axis=1) * np.linalg.norm(http_vectors, axis=1)
    )
    top = results["engine ceiling"]["docs_per_s"]
    print("\n| method | seconds | docs/s | vs engine ceiling |\n|---|---:|---:|---:|")
    for name, row in results.items():
        row["vs_ceiling"] = row["docs_per_s"] / top
        print(
            f"| {name} | {row['seconds']:.1f} | {row['docs_per_s']:.1f} | "
            f"{row['vs_ceiling']:.2f}x |"
        )
    cli_row = results["embed CLI"]
    print(
        f"\nembed CLI as a whole process (engine start and output included): "
        f"{cli_row['process_seconds']:.1f} s; tokens embedded: {cli_row['tokens']:,}"
    )
    print(
        f"CLI vs HTTP vectors: min cosine {cosine.min():.7f}, max |difference| "
        f"{np.abs(cli_vectors - http_vectors).max():.2e}"
    )
    print(f"load average at start {load_start}, at end {os.getloadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "documents": len(texts),
                "results": results,
                "min_cosine_cli_http": float(cosine.min()),
                "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
