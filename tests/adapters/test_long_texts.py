"""Long texts under truncation are tokenized from a prefix (suffix) only, and give exactly the
ids that tokenizing and truncating the whole text gives (the real MiniLM tokenizer); large
tokenizer work runs in a thread and stops when its request is abandoned."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from transformers import AutoTokenizer

from adapters.base import EmbedOptions, EngineSpec, InvalidInput, ModelFacts, SplitLimits
from adapters.token_limits import SpecialTokens, cut_lengths, fit
from adapters.vllm_engine import VLLMEngine, _off_loop, rust_batch_encoder
from gateway.config import resolve_model_path


@pytest.fixture(scope="module")
def engine() -> VLLMEngine:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    engine = VLLMEngine(EngineSpec(name="m", model="/m"))
    engine._tokenizer = tokenizer
    engine._encode_batch = rust_batch_encoder(tokenizer)
    engine._specials = SpecialTokens(1, 1)
    engine._facts = ModelFacts(dimension=384, max_model_len=256)
    return engine


def _words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocabulary = [
        "the",
        "capital",
        "of",
        "France",
        "is",
        "Paris,",
        "unbelievably",
        "(x)",
        "naïve",
        "日本語",
        "🚀",
        "3.14159",
        "--",
        "\t",
        "\n\n",
        "a" * 150,
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(n))


LONG_TEXTS = {
    "stars": "* " * 200_000,
    "words": _words(60_000),
    "no spaces": "abc,def;" * 30_000,
    "cjk": "日本語のテキスト" * 20_000,
    "space runs": ("word" + " " * 300) * 2_000,
    "one long word": "x" * 400_000,
    "emoji": "🚀🎉 " * 50_000,
}


@pytest.mark.parametrize("side", ["end", "start"])
@pytest.mark.parametrize("name", list(LONG_TEXTS))
def test_a_cut_long_text_truncates_exactly_as_the_whole(engine, name, side) -> None:
    text = LONG_TEXTS[name]
    options = EmbedOptions(truncate=side)
    whole = engine._tokenize_now([text])
    cut = engine._tokenize_texts([text], side, 256, threading.Event())
    assert fit(cut, options, max_model_len=256, model="m", specials=[SpecialTokens(1, 1)]) == fit(
        whole, options, max_model_len=256, model="m", specials=[SpecialTokens(1, 1)]
    )


def test_a_cut_reads_a_prefix_not_the_whole(engine, monkeypatch) -> None:
    read: list[int] = []
    encode_one = engine._encode_one
    monkeypatch.setattr(engine, "_encode_one", lambda t: read.append(len(t)) or encode_one(t))
    monkeypatch.setattr(engine, "_tokenize_now", lambda texts: pytest.fail("tokenized whole"))
    engine._tokenize_texts([LONG_TEXTS["words"]], "end", 256, threading.Event())
    assert read and max(read) <= next(cut_lengths(10**9, 256)) * 2


def test_short_and_untruncated_texts_are_tokenized_whole_in_groups(engine) -> None:
    texts = ["hello world", _words(3000), "x"]
    assert engine._tokenize_texts(texts, "none", 256, threading.Event()) == engine._tokenize_now(
        texts
    )


def test_abandoned_tokenizer_work_stops_at_the_next_step() -> None:
    steps: list[float] = []
    started = threading.Event()

    def work(cancel: threading.Event) -> None:
        started.set()
        for _ in range(500):  # 5 s unless stopped
            if cancel.is_set():
                from adapters.vllm_engine import _Abandoned

                raise _Abandoned()
            steps.append(time.monotonic())
            time.sleep(0.01)

    async def abandon() -> None:
        task = asyncio.ensure_future(_off_loop(10**6, work))
        await asyncio.to_thread(started.wait)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.monotonic()
        await asyncio.sleep(0.3)
        assert all(t < cancelled_at + 0.05 for t in steps)

    asyncio.run(abandon())
    assert len(steps) < 100


def test_split_refuses_too_many_chunks_before_building_them(engine, monkeypatch) -> None:
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    built = []
    monkeypatch.setattr(engine, "_split_one", lambda *a: built.append(1) or [])
    text = " ".join(map(str, range(20_000)))
    with pytest.raises(InvalidInput, match="at least .* chunks of at most 1 tokens"):
        engine._split_now([text], "q", 1, limits=SplitLimits(max_chunks=10_000))
    assert built == []


def test_split_keeps_only_the_first_chunks_asked_for(engine) -> None:
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    text = " ".join(map(str, range(5_000)))
    (pieces,) = engine._split_now([text], "q", 2, limits=SplitLimits(max_chunks_per_text=3))
    assert len(pieces) == 3 and text.startswith("".join(pieces))
