"""Limits the wire shapes enforce: input counts, tokens per request, NUL and lone surrogates,
brief echoes of client values, rerank documents."""

from __future__ import annotations

import pytest

from adapters.fake import FakeEngine
from gateway.api.rerank import parse_rerank_request
from gateway.config import Settings
from gateway.errors import APIError
from tests.conftest import serving
from tests.gateway.conftest import JSON, assert_error


def test_too_many_inputs_is_400(small) -> None:
    response = small.post("/v1/embeddings", json={"model": "fake", "input": ["a"] * 5})
    assert_error(response, 400, "`input` has 5 items, but a request may have at most 4")


def test_too_many_tokens_in_all_is_400_before_engine_work() -> None:
    engine = FakeEngine(max_model_len=512)
    with serving(Settings(max_request_tokens=10), fake=engine) as client:
        response = client.post("/v1/embeddings", json={"model": "fake", "input": ["a b c d"] * 2})
        assert_error(response, 400, "12 tokens in all, but a request may have at most 10")
        assert engine.call_count == 0


def test_at_the_token_limit_is_fine(small) -> None:
    response = small.post("/v1/embeddings", json={"model": "fake", "input": ["a b c"] * 2})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"fake","input":"a\\u0000b"}',
        b'{"model":"fake","input":["ok","\\u0000"]}',
        b'{"model":"fake","input":"\\ud800"}',
        b'{"model":"fake","input":["\\udfff x"]}',
        b'{"model":"fake","input":"\\ud800\\u0041"}',
        b'{"model":"fake","input":"\xed\xa0\x80"}',  # a surrogate encoded as (invalid) UTF-8
        b'{"model":"fake","input":"\xff"}',
    ],
)
def test_nul_and_lone_surrogates_are_400(client, raw) -> None:
    response = client.post("/v1/embeddings", content=raw, headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_long_values_are_not_echoed_whole(client) -> None:
    response = client.post("/v1/embeddings", json={"model": "m" * 100_000, "input": "a"})
    assert response.status_code == 404
    assert len(response.content) < 1000


def test_rerank_documents_are_limited_by_the_settings_at_parse_time() -> None:
    settings = Settings(max_rerank_documents=3)
    body = {"model": "m", "query": "q"}
    assert parse_rerank_request({**body, "documents": ["a"] * 3}, settings).texts == ["a"] * 3
    with pytest.raises(APIError, match="`documents` has 4 items, but a request may have at most 3"):
        parse_rerank_request({**body, "documents": ["a"] * 4}, settings)
    with pytest.raises(APIError, match=r"`documents\[1\]` contains a NUL character at position 1"):
        parse_rerank_request({**body, "documents": ["a", "b\x00"]}, settings)
    with pytest.raises(APIError, match=r"`documents\[0\]` contains a lone surrogate"):
        parse_rerank_request(
            {**body, "documents": [{"t": "\ud800"}], "rank_fields": ["t"]}, settings
        )
    assert Settings().max_rerank_documents == 1000


def test_rerank_documents_are_limited_and_checked() -> None:
    with serving(Settings(max_rerank_documents=3)) as client:
        body = {"model": "fake", "query": "q", "documents": ["a", "b", "c"]}
        assert client.post("/v1/rerank", json=body).status_code == 200
        response = client.post("/v1/rerank", json={**body, "documents": ["a"] * 4})
        assert_error(response, 400, "`documents` has 4 items, but a request may have at most 3")
        assert response.json()["detail"]  # the Jina clients' field, on rerank paths
        response = client.post("/v2/rerank", json={**body, "query": "q\x00"})
        assert_error(response, 400, "contains a NUL")


# -- conventions every declared shape shares ---------------------------------------------------


def test_explicit_null_means_absent(client) -> None:
    response = client.post(
        "/v1/embeddings",
        json={
            "model": "fake",
            "input": "a",
            "encoding_format": None,
            "dimensions": None,
            "input_type": None,
            "truncate": None,
            "truncate_prompt_tokens": None,
            "user": None,
        },
    )
    assert response.status_code == 200
    assert isinstance(response.json()["data"][0]["embedding"], list)  # the default format


@pytest.mark.parametrize(
    "path, body, param, message",
    [
        (
            "/v1/embeddings",
            {"input": "a", "dimensions": True},
            "dimensions",
            "`dimensions` must be an integer, got bool",
        ),
        (
            "/v1/embeddings",
            {"input": "a", "truncate_prompt_tokens": 0},
            "truncate_prompt_tokens",
            (
                "`truncate_prompt_tokens` must be -1 (the model's window) or an integer of at least 1, "
                "got 0"
            ),
        ),
        (
            "/v1/embeddings",
            {"input": "a", "encoding_format": "x" * 10_000},
            "encoding_format",
            "`encoding_format` must be one of ['float', 'base64'], got '" + "x" * 40 + "'...",
        ),
        (
            "/v1/embeddings",
            {"input": "a", "truncate": [[[["end"]]]]},
            "truncate",
            "`truncate` must be one of ['none', 'end', 'start'] (any case), got a JSON array",
        ),
        (
            "/v1/embeddings",
            {"input": [-5]},
            "input",
            "input 0: token id -5 is not a cl100k_base token id",
        ),
        (
            "/v2/embed",
            {"texts": ["a"], "embedding_types": "float"},
            "embedding_types",
            (
                "`embedding_types` must be a non-empty list of ['float', 'int8', 'uint8', 'binary', "
                "'ubinary', 'base64'], got 'float'"
            ),
        ),
        ("/v2/embed", {"texts": ["a"], "max_tokens": False}, "max_tokens", "got False"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "top_n": True},
            "top_n",
            "`top_n` must be an integer, got bool",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": [{"text": 5}]},
            "documents",
            "`documents[0].text` must be a string",
        ),
    ],
)
def test_refusals_keep_their_wording(client, path, body, param, message) -> None:
    response = client.post(path, json={"model": "fake", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert message in error["message"]
    assert len(response.content) < 1000
