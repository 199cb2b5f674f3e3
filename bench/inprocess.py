"""In-process baselines, each in its own subprocess so that its threads and memory are gone
before the next measurement:

- `engine`: vLLM's `AsyncLLM` alone, no HTTP: all texts tokenized in one batch call and
  issued at once as token-id prompts, the same engine arguments as the gateway. The ceiling.
- `st`: sentence-transformers `encode`, what a user would run instead of a server.

    python -m bench.inprocess engine|st TEXTS.json OUT.json [MODEL_FOLDER [DTYPE]]

TEXTS.json maps a set name to a list of texts; OUT.json gets {set: {texts, seconds, texts_per_s}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

MODEL = "builtin:all-MiniLM-L6-v2"


def run_engine(sets: dict[str, list[str]], model: str, dtype: str) -> dict:
    from vllm import PoolingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    from adapters.base import EngineSpec
    from adapters.vllm_engine import engine_arguments
    from gateway.config import resolve_model_path

    spec = EngineSpec(
        name="all-MiniLM-L6-v2",
        model=resolve_model_path(model),
        dtype=dtype,
        gpu_memory_utilization=None if current_platform.is_cpu() else 0.15,
    )
    llm = AsyncLLM.from_engine_args(
        AsyncEngineArgs(**engine_arguments(spec, on_cpu=current_platform.is_cpu()))
    )
    tokenizer = llm.get_tokenizer()
    params = PoolingParams(task="embed")

    async def one(ids: list[int], rid: str) -> None:
        async for _ in llm.encode({"prompt_token_ids": ids}, params, request_id=rid):
            pass

    async def measure(name: str, texts: list[str]) -> dict:
        start = time.perf_counter()
        ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
        await asyncio.gather(*(one(x, f"{name}-{i}") for i, x in enumerate(ids)))
        seconds = time.perf_counter() - start
        return {
            "texts": len(texts),
            "tokens": sum(map(len, ids)),
            "seconds": seconds,
            "texts_per_s": len(texts) / seconds,
            "tokens_per_s": sum(map(len, ids)) / seconds,
        }

    async def main() -> dict:
        await measure("warm", ["warm-up text"] * 16)
        return {name: await measure(name, texts) for name, texts in sets.items()}

    try:
        return asyncio.run(main())
    finally:
        llm.shutdown()


def run_st(sets: dict[str, list[str]], model: str, dtype: str) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from gateway.config import resolve_model_path

    device = "cuda" if torch.cuda.is_available() else "cpu"
    st = SentenceTransformer(resolve_model_path(model), device=device)
    if dtype in ("float16", "half"):
        st = st.half()
    st.encode(["warm-up text"] * 16)
    out = {}
    for name, texts in sets.items():
        tokens = sum(len(x) for x in st.tokenizer(texts)["input_ids"])
        start = time.perf_counter()
        st.encode(texts, batch_size=64 if device == "cpu" else 512)
        seconds = time.perf_counter() - start
        out[name] = {
            "texts": len(texts),
            "tokens": tokens,
            "seconds": seconds,
            "texts_per_s": len(texts) / seconds,
            "tokens_per_s": tokens / seconds,
        }
    return out


if __name__ == "__main__":
    kind, texts_file, out_file = sys.argv[1:4]
    model, dtype = (sys.argv[4:] + [MODEL, "float32"][len(sys.argv[4:]) :])[:2]
    sets = json.loads(Path(texts_file).read_text())
    result = (run_engine if kind == "engine" else run_st)(sets, model, dtype)
    Path(out_file).write_text(json.dumps(result))
