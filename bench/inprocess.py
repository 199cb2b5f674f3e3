"""In-process baselines, each in its own subprocess so that its threads and memory are gone
before the next measurement, and so that the environment it starts with (the gateway's
engine environment, for the engine) applies from the first instruction:

- `engine`: vLLM's `AsyncLLM` alone, no HTTP, with the engine arguments the gateway would
  build from GATEWAY_FLAGS: all texts tokenized in one batch call and issued at once as
  token-id prompts. The ceiling.
- `st`: sentence-transformers `encode`, what a user would run instead of a server.

    python -m bench.inprocess engine|st JOB.json OUT.json

JOB.json: {"sets": {name: [texts]}, "single": [texts], "gateway_flags": [flags]}; "single"
and "gateway_flags" are optional. OUT.json gets {name: {texts, tokens, seconds, texts_per_s,
tokens_per_s}} per set, and "single": {queries, p50_ms, p99_ms} when "single" was given: the
texts embedded one at a time, each after the previous one answered (a single query's latency).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.servers import gateway_settings
from harness.stats import percentile


def throughput(texts: Sequence[str], tokens: int, seconds: float) -> dict[str, Any]:
    return {
        "texts": len(texts),
        "tokens": tokens,
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
    }


def latency(seconds: Sequence[float]) -> dict[str, Any]:
    return {
        "queries": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
    }


def run_engine(job: dict[str, Any]) -> dict[str, Any]:
    from vllm import PoolingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    from adapters.vllm import engine_arguments

    (model,) = gateway_settings(job.get("gateway_flags", [])).models
    llm = AsyncLLM.from_engine_args(
        AsyncEngineArgs(**engine_arguments(model.engine, on_cpu=current_platform.is_cpu()))
    )
    tokenizer = llm.get_tokenizer()
    params = PoolingParams(task="embed")
    counter = iter(range(1 << 62))

    async def one(ids: list[int]) -> None:
        async for _ in llm.encode({"prompt_token_ids": ids}, params, request_id=str(next(counter))):
            pass

    async def measure(texts: list[str]) -> dict[str, Any]:
        start = time.perf_counter()
        ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
        await asyncio.gather(*(one(x) for x in ids))
        return throughput(texts, sum(map(len, ids)), time.perf_counter() - start)

    async def single(texts: list[str]) -> dict[str, Any]:
        seconds = []
        for text in texts:
            start = time.perf_counter()
            await one(tokenizer([text], add_special_tokens=True)["input_ids"][0])
            seconds.append(time.perf_counter() - start)
        return latency(seconds)

    async def main() -> dict[str, Any]:
        await measure(["warm-up text"] * 16)
        out = {}
        if job.get("single"):
            out["single"] = await single(job["single"])
        for name, texts in job["sets"].items():
            out[name] = await measure(texts)
        return out

    try:
        return asyncio.run(main())
    finally:
        llm.shutdown()


def run_st(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    (model,) = gateway_settings(job.get("gateway_flags", [])).models
    device = "cuda" if torch.cuda.is_available() else "cpu"
    st = SentenceTransformer(model.engine.model, device=device)
    if model.engine.dtype in ("float16", "half"):
        st = st.half()
    st.encode(["warm-up text"] * 16)
    out: dict[str, Any] = {}
    if job.get("single"):
        out["single"] = latency(_one_at_a_time(st.encode, job["single"]))
    for name, texts in job["sets"].items():
        tokens = sum(len(x) for x in st.tokenizer(texts)["input_ids"])
        start = time.perf_counter()
        st.encode(texts, batch_size=64 if device == "cpu" else 512)
        out[name] = throughput(texts, tokens, time.perf_counter() - start)
    return out


def _one_at_a_time(encode: Callable[[str], Any], texts: Sequence[str]) -> list[float]:
    seconds = []
    for text in texts:
        start = time.perf_counter()
        encode(text)
        seconds.append(time.perf_counter() - start)
    return seconds


if __name__ == "__main__":
    kind, job_file, out_file = sys.argv[1:4]
    job = json.loads(Path(job_file).read_text())
    result = (run_engine if kind == "engine" else run_st)(job)
    Path(out_file).write_text(json.dumps(result))
