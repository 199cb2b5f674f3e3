"""The request body: size cap before reading, JSON only, nesting."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import APIError
from gateway.http.body import BodyLimitMiddleware
from tests.gateway.conftest import JSON, assert_error


def test_declared_body_over_the_limit_is_413(small) -> None:
    response = small.post("/v1/embeddings", content=b"x" * 1001, headers=JSON)
    assert_error(response, 413, "larger than the limit of 1000 bytes")
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_body_over_the_limit_is_413(small) -> None:
    chunks = (b'{"model": "fake", "input": "' + b"a" * 400 for _ in range(5))
    response = small.post("/v1/embeddings", content=chunks, headers=JSON)
    assert_error(response, 413, "larger than the limit")


@pytest.mark.parametrize("chunked", [False, True])
def test_too_large_on_a_rerank_path_carries_detail(small, chunked) -> None:
    body = b"x" * 1001
    response = small.post("/v1/rerank", content=iter([body]) if chunked else body, headers=JSON)
    assert response.status_code == 413
    assert response.json()["detail"] == response.json()["error"]["message"]


def test_streamed_body_is_cut_off_before_the_excess_is_read() -> None:
    received: list[int] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            received.append(len(message["body"]))
            if not message.get("more_body"):
                return

    chunks = [{"type": "http.request", "body": b"x" * 400, "more_body": True}] * 10

    async def receive():
        return chunks.pop()

    scope = {"type": "http", "headers": [(b"transfer-encoding", b"chunked")]}
    with pytest.raises(APIError) as info:
        asyncio.run(BodyLimitMiddleware(app, 1000)(scope, receive, None))
    assert info.value.status == 413
    assert sum(received) == 800  # the third chunk raised instead of reaching the app
    assert len(chunks) == 7  # and nothing more was pulled from the client


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_only_json_is_accepted(small, content_type) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = small.post(
        "/v1/embeddings", content=b'{"model":"fake","input":"a"}', headers=headers
    )
    assert_error(response, 415, "Content-Type: application/json")


def test_json_with_charset_is_accepted(small) -> None:
    response = small.post(
        "/v1/embeddings",
        content=b'{"model":"fake","input":"a"}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_absurd_nesting_is_400(client, depth) -> None:
    raw = b'{"model":"fake","input":' + b"[" * depth + b"]" * depth + b"}"
    response = client.post("/v1/embeddings", content=raw, headers=JSON)
    assert_error(response, 400, "not valid JSON")


@pytest.mark.parametrize("field", ["input", "encoding_format", "model", "dimensions", "user"])
def test_deep_but_parseable_nesting_is_4xx_not_recursion(client, field) -> None:
    fields = {"model": '"fake"', "input": '"a"', field: "[" * 1000 + "]" * 1000}
    raw = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
    response = client.post("/v1/embeddings", content=raw.encode(), headers=JSON)
    # `user` is ignored like any unknown field; every other field answers 400 or 404.
    assert response.status_code in ((200,) if field == "user" else (400, 404))
    assert len(response.content) < 1000 or field == "user"
