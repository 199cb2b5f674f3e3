"""`make bench`: the gateway against vLLM's own server, tuned and as a user starts it, one run.

    python -m bench [--quick | --full] [--duration S] [--skip-vllm-serve] [--gateway-arg ARG]
    python -m bench --render-only

Order (one server at a time, so that none shares the cores with another): micro-benchmark
of base64 encoding, null-engine gateway (its own overhead), the gateway on vLLM, `vllm serve`
tuned (the gateway's engine arguments and engine environment, bench/servers.py), `vllm serve`
with its defaults, the in-process engine (the ceiling, with the gateway's engine arguments and
environment), sentence-transformers in-process (batches, and one short query at a time).
Results: a table on stdout and bench/results/latest.{json,md,png}; with the default --out, the
same tables go into the generated `bench` section of docs/benchmarks.md.
--render-only rewrites latest.md and those sections from latest.json alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from bench import cells as C
from bench import report
from bench.saved import cpu_model
from bench.servers import (
    gateway_launch,
    gateway_settings,
    vllm_defaults_launch,
    vllm_tuned_launch,
)
from gateway.config import Settings
from harness.launch import Launch, Server, free_port, running
from harness.load import closed_loop, probe
from harness.paths import REPO

RESULTS = report.RESULTS
# Short queries embedded one at a time in process (sentence-transformers, the engine): p50.
SINGLE_QUERIES = 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="4 cells, 3 s each (a smoke run)")
    size.add_argument(
        "--full",
        action="store_true",
        help="all 36 cells: concurrency 1/8/32 x "
        "inputs 1/16/64 x short/long x float/base64 (long on CPU: hours with three servers)",
    )
    p.add_argument("--duration", type=float, help="seconds of load per cell (default 8, quick 3)")
    p.add_argument(
        "--skip-vllm-serve", action="store_true", help="measure the gateway only (no vllm serve)"
    )
    p.add_argument(
        "--skip-vllm-defaults",
        action="store_true",
        help="leave out vllm serve with its defaults (keep the tuned one)",
    )
    p.add_argument(
        "--skip-inprocess",
        action="store_true",
        help="skip the in-process engine and sentence-transformers baselines",
    )
    p.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        help="extra argument for `python -m gateway serve` (repeatable), "
        "e.g. --gateway-arg=--workers=4; engine options given here reach the tuned vllm "
        "serve and the in-process engine too",
    )
    p.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        help="extra argument for the tuned vLLM server only (repeatable), "
        "e.g. --vllm-arg=--enforce-eager",
    )
    p.add_argument(
        "--model",
        default="builtin:" + C.MODEL_NAME,
        help="model folder served by all (default: the built-in MiniLM; on a GPU "
        "host e.g. an fp16 copy); clients call it all-MiniLM-L6-v2 either way",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        help="engine dtype for every server (float32 on CPU; float16 on a GPU)",
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: render the run saved in OUT/latest.json into "
        "latest.md (and, for the default OUT, the docs' bench section)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        report.render_only(args.out)
        return 0
    started = time.monotonic()
    mode = "quick" if args.quick else "full" if args.full else "default"
    matrix = (
        C.quick_matrix() if args.quick else C.full_matrix() if args.full else C.default_matrix()
    )
    duration = args.duration or (3.0 if args.quick else 8.0)
    from gateway.config import resolve_model_path

    model_path = resolve_model_path(args.model)
    result: dict[str, Any] = {"meta": meta(mode, duration, args, model_path)}
    print(f"# bench ({mode}): load average at start {result['meta']['loadavg_start']}", flush=True)
    texts, tokens = corpus(model_path)
    logs = args.out / "logs"

    result["micro"] = micro_encoding()
    print(
        f"base64 encoding of 32x1024 vectors: {result['micro']['base64_32x1024_ms']:.3f} ms",
        flush=True,
    )
    result["null_engine"] = null_engine(texts, tokens, duration, logs)

    gateway_flags = [
        "--model",
        model_path,
        "--served-model-name",
        C.MODEL_NAME,
        "--dtype",
        args.dtype,
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        *args.gateway_arg,
    ]
    from adapters.vllm import engine_environment

    # What the gateway will build from these flags (and this environment), so that the tuned
    # vllm serve and the in-process engine get the same engine and engine environment.
    settings = gateway_settings(gateway_flags)
    engine_env = engine_environment(settings.cpu_threads)
    result["meta"]["engine_environment"] = engine_env
    result["meta"]["gateway_workers"] = settings.workers
    servers = launches(args, settings, gateway_flags)
    result["meta"]["servers"] = {}
    for key, make in servers.items():
        port = free_port()
        launch = make(port)
        result["meta"]["servers"][key] = launch.to_dict(model_path)
        with running(launch, port, logs) as server:
            print(f"{server.name} ready in {server.started_in_s:.0f} s", flush=True)
            result[key] = drive(server, launch.embeddings_path, matrix, texts, tokens, duration)
            result[key + "_rerank"] = rerank(server, launch.rerank_path, texts, tokens, duration)
    if not args.skip_inprocess:
        job = {
            "sets": {length: texts[length][:n] for length, n in (("short", 2048), ("long", 256))},
            "single": texts["short"][: SINGLE_QUERIES // (3 if args.quick else 1)],
            "gateway_flags": gateway_flags,
        }
        result["engine_inprocess"] = inprocess("engine", job, engine_env)
        # sentence-transformers as an application runs it: with the gateway's preloads its
        # single-query p50 measured slower (13.9 ms against 6.9 ms, runs of 2026-11-29 12:00
        # and 11:24 UTC), so giving them to it would flatter the gateway's latency target.
        result["st_inprocess"] = inprocess("st", job, {})
    result["meta"]["loadavg_end"] = os.getloadavg()
    result["meta"]["wall_s"] = round(time.monotonic() - started)
    report.write(result, matrix, args.out)
    print(f"bench took {result['meta']['wall_s'] / 60:.1f} minutes", flush=True)
    return 0


def launches(
    args: argparse.Namespace, settings: Settings, gateway_flags: list[str]
) -> dict[str, Callable[[int], Launch]]:
    """The servers to measure, in order: result key -> its Launch on a given port."""
    from vllm.platforms import current_platform

    from adapters.vllm import engine_environment

    (model,) = settings.models
    on_cpu = current_platform.is_cpu()
    out: dict[str, Callable[[int], Launch]] = {
        "gateway": lambda port: gateway_launch(port, extra=gateway_flags)
    }
    if args.skip_vllm_serve:
        return out
    out["vllm_tuned"] = lambda port: vllm_tuned_launch(
        port, settings, on_cpu=on_cpu, extra=args.vllm_arg
    )
    if not args.skip_vllm_defaults:
        out["vllm_defaults"] = lambda port: vllm_defaults_launch(
            port,
            model.engine.model,
            model.name,
            dtype=args.dtype,
            memory_share=args.gpu_memory_utilization,
            drop=engine_environment(settings.cpu_threads),
        )
    return out


def meta(mode: str, duration: float, args: argparse.Namespace, model_path: str) -> dict:
    import torch
    import vllm

    return {
        "mode": mode,
        "duration_s": duration,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "model": C.MODEL_NAME,
        "model_path": model_path,
        "dtype": args.dtype,
        "gateway_args": args.gateway_arg,
        "vllm_args": args.vllm_arg,
        "command": " ".join(["python -m bench", *(sys.argv[1:])]),
    }


def corpus(model_path: str) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = {length: C.make_texts(model_path, length) for length in C.WORDS}
    tokens = {
        length: [len(ids) for ids in tokenizer(texts[length])["input_ids"]] for length in C.WORDS
    }
    for length in C.WORDS:
        print(
            f"{length} texts: {C.WORDS[length]} words, "
            f"{np.mean(tokens[length]):.0f} tokens on average",
            flush=True,
        )
    return texts, tokens


def micro_encoding(repeats: int = 300) -> dict:
    """The gateway's own encoder on 32 x 1024 float32 vectors (median of `repeats`)."""
    import orjson

    from gateway.serving.encoding import encode_vectors

    vectors = np.random.default_rng(0).standard_normal((32, 1024)).astype(np.float32)
    out = {}
    for fmt in ("base64", "float"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            orjson.dumps(encode_vectors(vectors, fmt), option=orjson.OPT_SERIALIZE_NUMPY)
            times.append(time.perf_counter() - t0)
        out[f"{fmt}_32x1024_ms"] = float(np.median(times) * 1000)
    return out


def null_engine(
    texts: dict, tokens: dict, duration: float, logs: Path, extra: Sequence[str] = ()
) -> dict:
    """The gateway with instant vectors: what it adds to every request (`extra`: more
    `serve` arguments, e.g. bench/tracing_cost.py's --otlp-endpoint)."""
    port = free_port()
    out: dict[str, Any] = {}
    with running(gateway_launch(port, engine="fake", extra=extra), port, logs) as server:
        for concurrency in (1, 32):
            cell = C.Cell("short", concurrency, 1, "float")
            bodies = C.embedding_bodies(cell, texts["short"], tokens["short"])
            res = uvloop.run(
                closed_loop(
                    server.base_url + "/v1/embeddings",
                    bodies,
                    concurrency=concurrency,
                    duration_s=duration,
                    server=server.psutil,
                )
            )
            out[f"c{concurrency}"] = res.to_dict()
            print(
                f"null engine, single input, c={concurrency}: {res.requests_per_s:,.0f} req/s, "
                f"p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, "
                f"client CPU {res.client_cpu_pct:.0f}%",
                flush=True,
            )
    return out


def drive(
    server: Server, path: str, matrix: list[C.Cell], texts: dict, tokens: dict, duration: float
) -> dict:
    out = {}
    for cell in matrix:
        bodies = C.embedding_bodies(cell, texts[cell.length], tokens[cell.length])
        res = uvloop.run(
            closed_loop(
                server.base_url + path,
                bodies,
                concurrency=cell.concurrency,
                duration_s=duration,
                server=server.psutil,
            )
        )
        out[cell.label] = res.to_dict()
        print(
            f"{server.name:>13} {cell.label:<26} {res.texts_per_s:8.1f} texts/s "
            f"p50 {res.p50_ms:8.1f} ms p99 {res.p99_ms:8.1f} ms  client CPU "
            f"{res.client_cpu_pct:3.0f}% server CPU {res.server_cpu_pct:3.0f}%"
            + (f"  ERRORS {res.errors}" if res.errors else ""),
            flush=True,
        )
    return out


def rerank(server: Server, path: str, texts: dict, tokens: dict, duration: float) -> dict:
    """Query + 32 documents, concurrency 8; skipped when the route is missing or refuses."""
    bodies = C.rerank_bodies(texts["short"], tokens["short"])
    status, raw = uvloop.run(probe(server.base_url + path, bodies[0].data))
    if status != 200:
        reason = (
            "no rerank route (404)"
            if status == 404
            else f"rerank answered {status}: {raw[:200].decode(errors='replace')}"
        )
        print(f"{server.name:>13} rerank skipped: {reason}", flush=True)
        return {"skipped": reason}
    res = uvloop.run(
        closed_loop(
            server.base_url + path, bodies, concurrency=8, duration_s=duration, server=server.psutil
        )
    )
    print(
        f"{server.name:>13} rerank q+32 docs c=8: {res.texts_per_s:8.1f} docs/s "
        f"p50 {res.p50_ms:.1f} ms p99 {res.p99_ms:.1f} ms",
        flush=True,
    )
    return res.to_dict()


def inprocess(kind: str, job: dict[str, Any], env: dict[str, str]) -> dict:
    """`python -m bench.inprocess KIND` in its own process, with `env` added to its
    environment from its start."""
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_file.write_text(json.dumps(job))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "bench.inprocess", kind, str(job_file), str(out_file)],
            cwd=REPO,
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        )
        if done.returncode != 0 or not out_file.exists():
            print(f"in-process {kind} failed:\n{done.stderr[-3000:]}", flush=True)
            return {"failed": done.stderr[-1000:]}
        result = json.loads(out_file.read_text())
    took = time.monotonic() - started
    for name, r in result.items():
        if name == "single":
            print(
                f"in-process {kind:>6} one short query at a time: p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms ({r['queries']} queries)",
                flush=True,
            )
            continue
        print(
            f"in-process {kind:>6} {name:<5}: {r['texts_per_s']:8.1f} texts/s "
            f"({r['tokens_per_s']:,.0f} tokens/s; {took:.0f} s in all)",
            flush=True,
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
