"""The fake engine's split: counted before anything is built, as the vLLM adapter's is."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from adapters.base import EngineSpec, InvalidInput, SplitLimits
from adapters.fake import FakeEngine

NUMBERS = " ".join(str(i) for i in range(60_000))  # the costs battery's rerank document


def test_a_refused_split_holds_no_more_than_twice_its_documents() -> None:
    # The costly-requests row: 4 documents of 60,000 numbers, 1 token per chunk. Their whole word
    # lists would take 14 MB before the refusal.
    engine = FakeEngine(EngineSpec(name="m", model="m"), scores_pairs=True)
    documents = [NUMBERS] * 4
    limits = SplitLimits(max_chunks=10_000, max_total_tokens=300_000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="at least 240000 chunks"):
            asyncio.run(engine.split(documents, query="which number", max_tokens=1, limits=limits))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * sum(map(len, documents))


def test_split_cuts_long_documents_into_budget_words() -> None:
    engine = FakeEngine(EngineSpec(name="m", model="m"), scores_pairs=True)
    pieces = asyncio.run(engine.split(["a b", "one two three four five"], query="q", max_tokens=2))
    assert pieces == [["a b"], ["one two", "three four", "five"]]
    kept = asyncio.run(
        engine.split(
            ["one two three four five"],
            query="q",
            max_tokens=2,
            limits=SplitLimits(max_chunks_per_text=2),
        )
    )
    assert kept == [["one two", "three four"]]
