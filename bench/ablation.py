"""`make bench-ablation`: what each process-level setting of `engine_environment` buys, on the
engine alone (vLLM's `AsyncLLM`, no HTTP), one setting added per row.

    python -m bench.ablation [--queries N] [--texts N]

Each row starts a fresh engine in its own subprocess with that row's environment, then
measures a short query at concurrency 1 (p50 and p99 over `--queries`) and `--texts` single
inputs kept 32 in flight (texts/s). Results: a table on stdout, bench/results/ablation.json,
and the generated `ablation` section of docs/benchmarks.md. On a GPU build the environment is
empty and only the first row applies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cells as C
from bench.saved import run_facts, save
from harness.paths import REPO
from harness.stats import percentile

RESULTS = REPO / "bench" / "results" / "ablation.json"
SECTION = "ablation"
TARGETS = ("docs/benchmarks.md",)
# Each row adds these variables of engine_environment("all") to the row above it.
ROWS = (
    ("vLLM's defaults", ()),
    ("+ model threads bound to every core", ("VLLM_CPU_OMP_THREADS_BIND",)),
    ("+ tcmalloc and Intel OpenMP preloaded", ("LD_PRELOAD",)),
)


def measure(model_path: str, queries: int, texts: int) -> dict[str, float]:
    """In the row's subprocess: start the engine, measure, shut it down."""
    import asyncio

    from vllm import PoolingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from adapters.base import EngineSpec
    from adapters.vllm import engine_arguments

    spec = EngineSpec(name=C.MODEL_NAME, model=model_path, dtype="float32")
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_arguments(spec, on_cpu=True)))
    ids = llm.get_tokenizer()(C.make_texts(model_path, "short"))["input_ids"]
    params = PoolingParams(task="embed")

    async def one(prompt: list[int], request_id: str) -> None:
        async for _ in llm.encode({"prompt_token_ids": prompt}, params, request_id=request_id):
            pass

    async def run() -> dict[str, float]:
        for i in range(20):
            await one(ids[i], f"warm-{i}")
        latencies = []
        for i in range(queries):
            began = time.perf_counter()
            await one(ids[i % len(ids)], f"c1-{i}")
            latencies.append(time.perf_counter() - began)
        in_flight = asyncio.Semaphore(32)

        async def limited(i: int) -> None:
            async with in_flight:
                await one(ids[i % len(ids)], f"c32-{i}")

        began = time.perf_counter()
        await asyncio.gather(*(limited(i) for i in range(texts)))
        seconds = time.perf_counter() - began
        return {
            "c1_p50_ms": percentile(latencies, 50) * 1000,
            "c1_p99_ms": percentile(latencies, 99) * 1000,
            "c32_texts_per_s": texts / seconds,
        }

    try:
        return asyncio.run(run())
    finally:
        llm.shutdown()


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    intro = (
        f"Engine alone (`AsyncLLM`, no HTTP), {meta['model']}, {meta['cpus']} CPU cores "
        f"({meta['cpu_model']}); `{meta['command']}`, {meta['date_utc']} UTC, "
        f"{meta['queries']} sequential short queries and {meta['texts']} single inputs "
        "32 in flight per row."
    )
    lines = [
        intro,
        "",
        "| environment | added | c=1 p50 ms | c=1 p99 ms | c=32 texts/s |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        added = ", ".join(f"`{k}={_short(v)}`" for k, v in row["added"].items()) or "nothing"
        lines.append(
            f"| {row['label']} | {added} | {row['c1_p50_ms']:.2f} | {row['c1_p99_ms']:.2f} | "
            f"{row['c32_texts_per_s']:.1f} |"
        )
    return "\n".join(lines)


def _short(value: str) -> str:
    """Library paths by file name: where the environment lives differs between machines."""
    return ":".join(Path(part).name if "/" in part else part for part in value.split(":"))


def render_saved() -> str:
    return markdown(json.loads(RESULTS.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ablation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure in this process
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row is not None:
        print(json.dumps(measure(args.model_path, args.queries, args.texts)))
        return 0

    from adapters.vllm import engine_environment
    from gateway.config import resolve_model_path

    model_path = resolve_model_path("builtin:" + C.MODEL_NAME)
    tuned = engine_environment("all")
    # vLLM's own defaults: none of engine_environment's variables, whatever this shell has.
    base = {k: v for k, v in os.environ.items() if k not in tuned}
    base["HF_HUB_OFFLINE"] = "1"
    rows, added_so_far = [], {}
    for label, names in ROWS:
        added = {name: tuned[name] for name in names if name in tuned}
        if names and not added:
            continue  # not on this build (GPU): nothing to add
        added_so_far.update(added)
        with tempfile.TemporaryFile() as log:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.ablation",
                    "--row",
                    label,
                    "--model-path",
                    model_path,
                    "--queries",
                    str(args.queries),
                    "--texts",
                    str(args.texts),
                ],
                cwd=REPO,
                env={**base, **added_so_far},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                log.seek(0)
                print(log.read()[-3000:].decode(errors="replace"), file=sys.stderr)
                return 1
        row = {"label": label, "added": added, **json.loads(done.stdout.splitlines()[-1])}
        rows.append(row)
        print(
            f"{label:<42} c=1 p50 {row['c1_p50_ms']:6.2f} ms p99 {row['c1_p99_ms']:6.2f} ms  "
            f"c=32 {row['c32_texts_per_s']:7.1f} texts/s",
            flush=True,
        )
    result = {
        "meta": {
            **run_facts("bench.ablation", argv),
            "model": C.MODEL_NAME,
            "queries": args.queries,
            "texts": args.texts,
        },
        "rows": rows,
    }
    save(result, args.out, default_out=RESULTS, section=SECTION, targets=TARGETS, render=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
