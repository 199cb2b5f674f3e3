"""`make bench-profile`: where a single short query's time goes in the gateway, at c=1 and c=8.

    python -m bench.profile [--concurrency 1 8] [--seconds S]

For each concurrency: the gateway starts on the built-in model (`make run`'s defaults), a
closed loop of single short inputs runs against it, and py-spy samples every thread of the
gateway process and of vLLM's processes under it (`--subprocesses`, `--nonblocking`, 200 Hz)
for `--seconds`. Each sample's stack is put in one stage by the first rule of STAGES that
matches it; the table gives each stage's share of one core (samples / rate / seconds), so the
stages of one process add up to how busy its Python threads were. Native threads (OpenMP's
worker threads, the Rust tokenizer's) are not seen; the model's own time shows as the Python
frame that waits for it. Results: a table on stdout, bench/results/profile.json, and the
generated `profile` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.saved import run_facts, save
from harness.paths import REPO

RESULTS = REPO / "bench" / "results" / "profile.json"
SECTION = "profile"
TARGETS = ("docs/benchmarks.md",)
RATE_HZ = 200

# (process, stage, needles): a sample goes to the first stage of its process with a needle in
# any frame of its stack ("function (file:line)"), so the specific stages come before the
# ones every request's stack passes through (HTTP, the event loop). The process is the one
# named by the stack's last `process` frame: the gateway, vLLM's engine core, its worker.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("worker", "model forward", ("_model_forward",)),
    ("worker", "waiting for the next step (spinning)", ("dequeue", "acquire_read")),
    ("worker", "other", ("",)),
    ("engine core", "waiting for the worker (spinning)", ("acquire_read", "get_response")),
    ("engine core", "scheduling and outputs", ("step", "schedule", "update_from_output")),
    ("engine core", "receiving and sending requests", ("process_input", "process_output")),
    ("engine core", "other", ("",)),
    ("gateway", "tokenization", ("_token_ids", "_tokenize_texts")),
    ("gateway", "hand-off to the engine core", ("AsyncLLM.add_request", "_send_input")),
    ("gateway", "engine outputs back", ("process_outputs_socket", "MsgpackDecoder")),
    (
        "gateway",
        "response encoding",
        ("gateway/encoding.py", "embeddings_response", "json_response", "responses.py"),
    ),
    ("gateway", "validation", ("gateway/schemas.py", "gateway/body.py", "pydantic")),
    ("gateway", "admission and request guard", ("gateway/admission.py",)),
    ("gateway", "metrics and request log", ("gateway/metrics.py", "prometheus_client")),
    ("gateway", "HTTP and middleware", ("uvicorn/", "starlette/", "gateway/")),
    ("gateway", "event loop (uvloop, callbacks)", ("Runner.run",)),
    ("gateway", "other", ("",)),
)


def process_of(first_frame: str) -> str:
    if "Worker" in first_frame:
        return "worker"
    if "EngineCore" in first_frame:
        return "engine core"
    return "gateway"


def stage_of(process: str, frames: list[str]) -> str:
    for owner, stage, needles in STAGES:
        if owner == process and any(n in frame for n in needles for frame in frames):
            return stage
    return "other"


def summarize(raw: str, seconds: float) -> list[dict[str, Any]]:
    """py-spy's raw output (`stack;frames;... count` lines) as (process, stage, share of a
    core) rows, gateway first. With --subprocesses every stack starts with its process."""
    samples: Counter[tuple[str, str]] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # A child's stack carries its parents' process frames first: the last one is its own.
        owners = [i for i, frame in enumerate(frames) if frame.startswith("process ")]
        own = frames[owners[-1]] if owners else ""
        process = process_of(own)
        samples[process, stage_of(process, frames[owners[-1] + 1 if owners else 0 :])] += int(count)
    order = {name: i for i, name in enumerate(["gateway", "engine core", "worker"])}
    rows = [
        {"process": process, "stage": stage, "core_share": n / RATE_HZ / seconds}
        for (process, stage), n in samples.items()
    ]
    return sorted(rows, key=lambda r: (order[r["process"]], -r["core_share"]))


def profile(concurrency: int, seconds: float, workdir: Path) -> dict[str, Any]:
    import uvloop

    from bench import cells as C
    from bench.run import corpus
    from bench.servers import gateway_launch
    from gateway.config import resolve_model_path
    from harness.launch import free_port, running
    from harness.load import closed_loop

    model = resolve_model_path("builtin:" + C.MODEL_NAME)
    texts, tokens = corpus(model)
    port = free_port()
    launch = gateway_launch(port, extra=["--model", model, "--served-model-name", C.MODEL_NAME])
    raw_path = workdir / f"c{concurrency}.txt"
    with running(launch, port, workdir / "logs") as server:
        cell = C.Cell("short", concurrency, 1, "float")
        bodies = C.embedding_bodies(cell, texts["short"], tokens["short"])
        py_spy = str(Path(sys.executable).with_name("py-spy"))

        def record() -> None:
            time.sleep(2)  # the loop at its steady state first
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    str(RATE_HZ),
                    "--format",
                    "raw",
                    "--output",
                    str(raw_path),
                    "--nonblocking",
                    "--subprocesses",
                ],
                check=True,
                capture_output=True,
            )

        recorder = threading.Thread(target=record)
        recorder.start()
        load = uvloop.run(
            closed_loop(
                server.base_url + "/v1/embeddings",
                bodies,
                concurrency=concurrency,
                duration_s=seconds + 5,
                server=server.psutil,
            )
        )
        recorder.join()
    return {
        "concurrency": concurrency,
        "texts_per_s": load.texts_per_s,
        "p50_ms": load.p50_ms,
        "server_cpu_pct": load.server_cpu_pct,
        "rows": summarize(raw_path.read_text(), seconds),
    }


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    runs = result["runs"]
    lines = [
        (
            f"`{meta['command']}`, {meta['date_utc']} UTC, {meta['cpus']} CPU cores "
            f"({meta['cpu_model']}), py-spy at {RATE_HZ} Hz for {meta['seconds']:.0f} s per "
            "concurrency, single short inputs (12 words). Share of one core spent in each stage "
            "by the Python threads of each process (a process's rows add up to how busy they "
            "were; the model's OpenMP threads are native and show as the frame waiting on them)."
        ),
        "",
        "| process | stage | " + " | ".join(f"c={run['concurrency']}" for run in runs) + " |",
        "|---|---|" + "---:|" * len(runs),
    ]
    # Rows in STAGES' order: each process's stages together, in the order they are matched.
    order = {(process, stage): i for i, (process, stage, _) in enumerate(STAGES)}
    seen = {(row["process"], row["stage"]) for run in runs for row in run["rows"]}
    keys = sorted(seen, key=lambda key: order.get(key, len(order)))
    for process, stage in keys:
        shares = [
            next(
                (r["core_share"] for r in run["rows"] if (r["process"], r["stage"]) == key),
                0.0,
            )
            for run in runs
            for key in [(process, stage)]
        ]
        lines.append(f"| {process} | {stage} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    lines.append(
        "| (load) | texts/s, p50 ms, server CPU % | "
        + " | ".join(
            f"{run['texts_per_s']:.0f}, {run['p50_ms']:.1f}, {run['server_cpu_pct']:.0f}"
            for run in runs
        )
        + " |"
    )
    return "\n".join(lines)


def render_saved() -> str:
    return markdown(json.loads(RESULTS.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        runs = [profile(c, args.seconds, Path(tmp)) for c in args.concurrency]
    result = {
        "meta": {
            **run_facts("bench.profile", argv),
            "seconds": args.seconds,
        },
        "runs": runs,
    }
    save(result, args.out, default_out=RESULTS, section=SECTION, targets=TARGETS, render=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
