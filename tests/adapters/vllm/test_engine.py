"""The vLLM engine without AsyncLLM: pair prompts, the model's kind, background priority."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from adapters.base import BACKGROUND_PRIORITY, EngineSpec, background
from adapters.vllm.engine import VLLMEngine, _scores_pairs

TEMPLATE = "Q={{ messages[0].content }}|D={{ messages[1].content }}"


def test_cross_encoder_pairs_carry_segment_ids(tokenizer, offline_engine) -> None:
    ids, type_ids = offline_engine()._pair_prompt("a query", "the document")
    assert ids == tokenizer("a query", "the document")["input_ids"]
    assert type_ids == [0, 0, 0, 0, 1, 1, 1]


def test_score_template_renders_query_then_document(tokenizer, offline_engine) -> None:
    ids, type_ids = offline_engine(score_template=TEMPLATE)._pair_prompt("q1", "d2")
    assert tokenizer.decode(ids) == "q = q1 | d = d2"
    assert type_ids is None


def test_llm_without_template_concatenates_as_vllm_does(tokenizer, offline_engine) -> None:
    engine = offline_engine()
    engine._use_sep_token = False
    ids, _ = engine._pair_prompt("paris", "france")
    assert ids == tokenizer("parisfrance")["input_ids"]


@pytest.mark.parametrize(
    "kind, tasks, expected",
    [
        ("auto", ("embed", "token_embed"), False),
        ("auto", ("classify", "token_classify"), True),
        ("cross_encoder", ("classify",), True),
        ("llm", ("classify",), True),
        ("embedding", ("embed", "classify"), False),
    ],
)
def test_rerank_kind_against_what_the_model_supports(kind, tasks, expected) -> None:
    assert _scores_pairs(EngineSpec(name="m", model="/m", rerank_kind=kind), tasks) is expected


@pytest.mark.parametrize(
    "kind, tasks, message",
    [
        ("cross_encoder", ("embed",), "not a sequence classifier"),
        ("llm", ("embed",), "hf_overrides"),
        ("embedding", ("classify",), "cannot embed"),
    ],
)
def test_rerank_kind_mismatch_fails_the_load(kind, tasks, message) -> None:
    with pytest.raises(ValueError, match=message):
        _scores_pairs(EngineSpec(name="m", model="/m", rerank_kind=kind), tasks)


# -- background work: paced and at vLLM's lower priority (engine test: tests/e2e) -------------


class _RecordingLLM:
    """AsyncLLM.encode as the adapter calls it: records each request's priority."""

    def __init__(self) -> None:
        self.priorities: list[int] = []

    async def encode(self, prompt, params, *, request_id: str, priority: int):
        self.priorities.append(priority)
        yield SimpleNamespace(
            outputs=SimpleNamespace(data=SimpleNamespace(numpy=lambda: np.zeros(3)))
        )


class _RecordingPacer:
    def __init__(self) -> None:
        self.asked: list[int] = []

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int):
        self.asked.append(tokens)
        yield


def test_background_inputs_wait_for_the_pacer_and_run_at_low_priority() -> None:
    engine = VLLMEngine(EngineSpec(name="m", model="/m"))
    engine._llm = llm = _RecordingLLM()
    pacer = _RecordingPacer()

    async def work() -> None:
        await engine._pool({"prompt_token_ids": [101, 7, 102]}, None, "interactive")
        with background(pacer):
            await engine._pool({"prompt_token_ids": [101, 7, 8, 102]}, None, "batch")
        await engine._pool({"prompt_token_ids": [101, 102]}, None, "interactive-again")

    asyncio.run(work())
    assert llm.priorities == [0, BACKGROUND_PRIORITY, 0]
    assert pacer.asked == [4]
