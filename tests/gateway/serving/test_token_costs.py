"""The tokenizer routes and /score cost what their size allows: TEI's and vLLM's /tokenize,
/decode and /detokenize, and vLLM's /score, checked against the character and token bounds
of /v1/embeddings before any work; large answers are still served (built in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.config import Settings
from gateway.serving import token_costs
from tests.conftest import serving


def assert_error(response, status: int, fragment: str) -> None:
    """Refused with `status`; the message, in the route's dialect's body, holds `fragment`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in (error if isinstance(error, str) else error["message"])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_model_len=64)


@pytest.fixture
def bounded(engine) -> Iterator[TestClient]:
    """A 64-token model (1024 characters per input), 2000 characters and 100 tokens per
    request."""
    settings = Settings(max_request_chars=2000, max_request_tokens=100)
    with serving(settings, fake=engine) as client:
        yield client


def tokenizer_calls(engine: FakeEngine) -> int:
    return len(engine.calls)


def test_tei_tokenize_of_a_text_over_the_input_bound_is_refused_before_tokenizing(
    bounded, engine
) -> None:
    before = tokenizer_calls(engine)
    response = bounded.post("/tokenize", json={"inputs": "a " * 1000})
    assert_error(response, 422, "input 0 has 2000 characters")
    assert "tokenize a shorter text" in response.json()["error"]
    assert tokenizer_calls(engine) == before


def test_tei_tokenize_over_the_request_characters_is_refused_before_tokenizing(
    bounded, engine
) -> None:
    before = tokenizer_calls(engine)
    response = bounded.post("/tokenize", json={"inputs": ["a " * 500] * 3})
    assert_error(response, 422, "3000 characters in all")
    assert tokenizer_calls(engine) == before


def test_tei_tokenize_returning_more_tokens_than_a_request_may_hold_is_refused(bounded) -> None:
    response = bounded.post("/tokenize", json={"inputs": ["a " * 60, "b " * 60]})
    assert_error(response, 422, "but a request may have at most 100 (--max-request-tokens)")


def test_vllm_tokenize_has_the_same_bounds(bounded, engine) -> None:
    before = tokenizer_calls(engine)
    response = bounded.post("/tokenize", json={"prompt": "a " * 1000})
    assert_error(response, 400, "2000 characters")
    assert response.json()["error"]["param"] == "prompt"
    assert tokenizer_calls(engine) == before
    assert_error(
        bounded.post("/tokenize", json={"prompt": "a " * 200}), 400, "--max-request-tokens"
    )


def test_decode_and_detokenize_refuse_more_ids_than_a_request_may_hold(bounded, engine) -> None:
    before = tokenizer_calls(engine)
    assert_error(bounded.post("/decode", json={"ids": [[5] * 60, [6] * 60]}), 422, "120 token ids")
    assert_error(bounded.post("/detokenize", json={"tokens": [5] * 101}), 400, "101 token ids")
    assert tokenizer_calls(engine) == before


def test_score_counts_every_pair_text_toward_the_request_characters(bounded, engine) -> None:
    before = tokenizer_calls(engine)
    response = bounded.post(
        "/score", json={"queries": ["q1", "q2"], "documents": ["d " * 500, "e " * 500]}
    )
    assert_error(response, 400, "2004 characters in all")
    assert response.json()["error"]["param"] == "documents"
    assert tokenizer_calls(engine) == before


def test_large_tokenize_answers_are_built_in_a_thread_and_still_served(bounded) -> None:
    threaded = []
    original = token_costs.asyncio.to_thread

    async def spy(build, *args):
        threaded.append(build)
        return await original(build, *args)

    with (
        mock.patch.object(token_costs, "INLINE_TOKENS", 10),
        mock.patch.object(token_costs.asyncio, "to_thread", spy),
    ):
        tei = bounded.post("/tokenize", json={"inputs": "a " * 40})
        vllm = bounded.post("/tokenize", json={"prompt": "a " * 40})
        small = bounded.post("/tokenize", json={"inputs": "a b"})
    assert tei.status_code == vllm.status_code == small.status_code == 200
    assert len(tei.json()[0]) == 42  # 40 words and two special tokens
    assert vllm.json()["count"] == 42
    assert len(threaded) == 2
