"""Feeding the engine: batch cutting, batches in flight, commits in row order, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from adapters.base import EmbeddingBatch, EmbedOptions, Prompt, SparseBatch
from adapters.fake import FakeEngine, fake_vector
from gateway.bulk import BulkError
from gateway.bulk.pipeline import Job, Result, TokenEstimate, batches, run
from gateway.serving.inputs import Truncation
from gateway.serving.registry import EngineState, ServedModel


def test_batches_hold_about_the_token_budget_and_at_least_one_document() -> None:
    records = [(i, "w " * n) for i, n in enumerate([3, 3, 3, 50, 1])]
    cut = list(
        batches(records, 10, budget=8, max_documents=100, estimate=lambda text: len(text.split()))
    )
    assert [(b.start, b.ids) for b in cut] == [(10, [0, 1]), (12, [2]), (13, [3]), (14, [4])]


def test_batches_respect_the_document_limit() -> None:
    cut = list(
        batches([(i, "x") for i in range(5)], 0, budget=10**6, max_documents=2, estimate=len)
    )
    assert [b.ids for b in cut] == [[0, 1], [2, 3], [4]]


def test_token_estimate_learns_characters_per_token() -> None:
    estimate = TokenEstimate(chars_per_token=4.0)
    assert estimate("x" * 40) == pytest.approx(12)
    estimate.learn(["x" * 100_000], 100_000)  # the engine says: one character per token
    assert estimate("x" * 40) == pytest.approx(42, rel=0.01)


class UnevenEngine(FakeEngine):
    """The first call is the slowest, so later batches finish first; counts overlap."""

    def __init__(self) -> None:
        super().__init__(dimension=4)
        self.active = self.most_active = 0

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(0.05 if self.call_count == 0 else 0.001)
            return await super().embed(prompts, options)
        finally:
            self.active -= 1


def served(engine: FakeEngine) -> ServedModel:
    return ServedModel("fake", (), engine, state=EngineState.READY)


def test_results_are_committed_in_row_order_with_several_batches_in_flight() -> None:
    engine = UnevenEngine()
    engine.started = True
    texts = [f"document {i}" for i in range(40)]
    committed: list[Result] = []
    job = Job(served(engine), "fake", batch_tokens=10, inflight=3)
    asyncio.run(run(job, list(enumerate(texts))[5:], 5, committed.append))
    assert [r.batch.start for r in committed] == sorted(r.batch.start for r in committed)
    assert [i for r in committed for i in r.batch.ids] == list(range(5, 40))
    assert engine.most_active == 3
    rows = np.concatenate([r.vectors for r in committed])
    assert np.array_equal(rows, np.stack([fake_vector(t, 4) for t in texts[5:]]))


def test_a_failing_document_is_named_and_the_batches_in_flight_are_cancelled() -> None:
    engine = FakeEngine(dimension=4, max_model_len=6, latency_s=0.2)
    engine.started = True
    texts = ["far too many words for this tiny window"] + ["short"] * 30
    committed: list[Result] = []
    job = Job(served(engine), "fake", batch_tokens=9, inflight=4)
    with pytest.raises(
        BulkError, match=r"document 0 \(id 0\): it has 10 tokens.*pass --truncate end"
    ):
        asyncio.run(run(job, list(enumerate(texts)), 0, committed.append))
    assert committed == []
    assert engine.aborted == 3  # the later batches in flight were cancelled, not left running


class NaNSparseEngine(FakeEngine):
    """Sparse weights that are NaN for a text holding "poison"."""

    async def embed_sparse(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> SparseBatch:
        batch = await super().embed_sparse(prompts, options)
        for prompt, vector in zip(prompts, batch.vectors):
            if "poison" in str(prompt):
                vector.values[:] = np.nan
        return batch


def test_a_non_finite_sparse_weight_is_never_committed() -> None:
    engine = NaNSparseEngine(dimension=4, outputs=("dense", "sparse"))
    engine.started = True
    committed: list[Result] = []
    job = Job(served(engine), "fake", outputs=("dense", "sparse"), batch_tokens=100)
    texts = ["fine", "poison pill", "fine too"]
    with pytest.raises(BulkError, match=r"document 1 \(id 1\): the engine produced a non-finite"):
        asyncio.run(run(job, list(enumerate(texts)), 0, committed.append))
    assert committed == []


def test_every_output_comes_from_the_same_prompts() -> None:
    engine = FakeEngine(dimension=4, outputs=("dense", "sparse", "multivector"))
    engine.started = True
    committed: list[Result] = []
    job = Job(
        served(engine),
        "fake",
        outputs=("dense", "sparse", "multivector"),
        length=Truncation("end", 3),  # [CLS] first-word [SEP]
    )
    asyncio.run(run(job, [(0, "alpha beta gamma")], 0, committed.append))
    [result] = committed
    assert engine.calls == [["alpha beta gamma"]] * 3
    assert {o.max_tokens for o in engine.options} == {3}
    assert np.array_equal(result.vectors, fake_vector("[CLS] alpha [SEP]", 4)[None])
    assert result.sparse is not None and len(result.sparse[0].indices) == 1
    assert result.multivector is not None and result.multivector[0].shape == (2, 4)
    assert result.tokens == 3
