"""Sparse vectors, token vectors and label scores through the serving layer: one set of
prompts for every output asked, tokens counted once, a model lacking an output refused
before any work, and token vectors bounded by --max-token-vectors before the work."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence

import numpy as np
import pytest

from adapters.base import EngineSpec, InvalidInput
from adapters.fake import FakeEngine, fake_vector
from gateway.config import InputPolicy, Settings
from gateway.errors import APIError
from gateway.http.drain import Drain
from gateway.http.request_context import Timing
from gateway.serving.admission import Admission
from gateway.serving.embedding import EmbedJob
from gateway.serving.guard import Guard
from gateway.serving.inputs import Truncation
from gateway.serving.outputs import ClassifyJob, classify, compute, token_vector_limited
from gateway.serving.registry import ModelRegistry, ServedModel
from gateway.serving.token_ids import Cl100kDecoder
from tests.conftest import TIKTOKEN_DIR

M3 = ("dense", "sparse", "multivector")


async def _never() -> None:
    await asyncio.Event().wait()


def served(outputs: Sequence[str] = M3, **kwargs: object) -> ServedModel:
    engine = FakeEngine(EngineSpec(name="m", model="m"), outputs=tuple(outputs), **kwargs)  # type: ignore[arg-type]
    asyncio.run(engine.start())
    return ServedModel("m", (), engine, InputPolicy(prompts={"query": "q: "}))


def guard(model: ServedModel, settings: Settings | None = None) -> Guard:
    return Guard(
        admission=Admission(1000),
        registry=ModelRegistry([model]),
        drain=Drain(),
        settings=settings or Settings(),
        decoder=Cl100kDecoder(TIKTOKEN_DIR),
        timing=Timing(time.perf_counter()),
        disconnected=_never,
    )


def test_every_output_reads_the_same_prompts_and_tokens_count_once() -> None:
    model = served()
    job = EmbedJob(model, "m", ["a b c", "d"], "query", Truncation("end", 5))
    result = asyncio.run(compute(job, guard(model), M3))
    engine = model.engine
    assert isinstance(engine, FakeEngine)
    # The prompt template and truncation apply to each output alike.
    assert engine.calls[-3:] == [["q: a b c", "q: d"]] * 3
    assert len({(o.truncate, o.max_tokens) for o in engine.options[-3:]}) == 1
    assert result.dense is not None and result.sparse is not None and result.tokens is not None
    assert result.total_tokens == result.dense.total_tokens == result.sparse.total_tokens
    assert result.truncated == (0,)


def test_only_the_outputs_asked_are_computed() -> None:
    model = served()
    result = asyncio.run(compute(EmbedJob(model, "m", ["a"]), guard(model), ("sparse",)))
    assert result.dense is None and result.tokens is None and result.sparse is not None
    assert len(model.engine.calls) == 1  # type: ignore[attr-defined]


def test_an_output_the_model_lacks_is_refused_before_any_work() -> None:
    model = served(("dense",))
    with pytest.raises(APIError) as raised:
        asyncio.run(compute(EmbedJob(model, "m", ["a"]), guard(model), ("dense", "multivector")))
    assert raised.value.status == 400
    assert raised.value.message == "model 'm' has no multivector output; it computes: dense"
    assert model.engine.calls == []  # type: ignore[attr-defined]


def test_token_vectors_past_the_cap_are_refused_before_the_work_naming_the_limit() -> None:
    model = served(max_model_len=512, dimension=4)
    settings = Settings(max_token_vectors=10)
    text = " ".join(["w"] * 9)  # 11 tokens with [CLS] and [SEP]
    with pytest.raises(APIError) as raised:
        asyncio.run(compute(EmbedJob(model, "m", [text]), guard(model, settings), ("multivector",)))
    assert raised.value.status == 400
    assert "--max-token-vectors" in raised.value.message
    assert "at most 10 tokens" in raised.value.message
    assert model.engine.completed == 0  # type: ignore[attr-defined]
    # One token fewer fits; the dense vector alone is not bounded by the cap. (A fresh model:
    # its events belong to the event loop of the first call.)
    model = served(max_model_len=512, dimension=4)
    fits = " ".join(["w"] * 8)

    async def both() -> None:
        await compute(EmbedJob(model, "m", [fits]), guard(model, settings), ("multivector",))
        await compute(EmbedJob(model, "m", [text]), guard(model, settings), ("dense",))

    asyncio.run(both())


def test_token_vectors_are_the_engines_rows() -> None:
    model = served(dimension=4)
    result = asyncio.run(compute(EmbedJob(model, "m", ["a b"]), guard(model), ("multivector",)))
    assert result.tokens is not None
    np.testing.assert_allclose(
        result.tokens.matrices[0],
        [fake_vector("a", 4), fake_vector("b", 4), fake_vector("[SEP]", 4)],
        atol=1e-6,
    )


def test_classify_pairs_and_logits() -> None:
    model = served(("classify",), labels=("x", "y"))
    probs = asyncio.run(classify(ClassifyJob(model, ["a", ("b", "c")]), guard(model)))
    logits = asyncio.run(
        classify(ClassifyJob(model, ["a", ("b", "c")], activation=False), guard(model))
    )
    assert probs.scores.shape == (2, 2)
    np.testing.assert_allclose(probs.scores.sum(axis=1), 1)
    exp = np.exp(logits.scores)
    np.testing.assert_allclose(exp / exp.sum(axis=1, keepdims=True), probs.scores)


def test_classify_refuses_a_model_without_labels_and_long_untruncated_text() -> None:
    model = served(("dense",))
    with pytest.raises(APIError, match="no classify output; it computes: dense"):
        asyncio.run(classify(ClassifyJob(model, ["a"]), guard(model)))
    labels = served(("classify",), max_model_len=8)
    with pytest.raises(APIError, match="characters"):
        asyncio.run(
            classify(
                ClassifyJob(labels, [("a" * 100, "b" * 100)], Truncation("none")), guard(labels)
            )
        )


def test_only_the_token_total_refusal_names_the_token_vector_limit() -> None:
    model = served(max_model_len=512)
    settings = Settings(max_token_vectors=10)

    async def refuse(message: str, index: int | None = None) -> None:
        raise InvalidInput(message, index=index)

    limited = token_vector_limited(
        model.engine.facts, settings, lambda: refuse("the inputs have 11 tokens in all")
    )
    with pytest.raises(InvalidInput, match="--max-token-vectors"):
        asyncio.run(limited())
    for message, index in [("too many chunks", None), ("the inputs have 11 tokens in all", 0)]:
        other = token_vector_limited(
            model.engine.facts, settings, functools.partial(refuse, message, index)
        )
        with pytest.raises(InvalidInput) as raised:
            asyncio.run(other())
        assert raised.value.message == message
