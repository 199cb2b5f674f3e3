"""Request ids, the per-request log line, and the one catch-all 500."""

from __future__ import annotations

import logging

import pytest


def test_a_sane_client_request_id_is_echoed(client) -> None:
    response = client.get("/v1/models", headers={"x-request-id": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"


@pytest.mark.parametrize("unsafe", ["a" * 65, "has space", "new\\nline", ""])
def test_an_unsafe_client_request_id_is_replaced(client, unsafe: str) -> None:
    response = client.get("/v1/models", headers={"x-request-id": unsafe})
    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


def test_the_log_line_carries_id_route_model_and_counts(client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.post(
            "/v1/embeddings",
            json={"model": "fake", "input": ["a", "b"]},
            headers={"x-request-id": "rid-1"},
        )
    (line,) = [r.getMessage() for r in caplog.records if "rid-1" in r.getMessage()]
    assert "path='/v1/embeddings'" in line and "status=200" in line
    assert "model=fake" in line and "inputs=2" in line


def test_an_unexpected_error_is_one_generic_500_with_the_id(client, fake_engine, caplog) -> None:
    fake_engine.fail_with = RuntimeError("secret internals")
    with caplog.at_level(logging.ERROR, logger="gateway.access"):
        response = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
    assert response.status_code == 500
    assert "secret" not in response.text
    assert response.headers["x-request-id"] in response.json()["error"]["message"]
    # the traceback is in the log, once
    assert sum("unhandled error" in r.getMessage() for r in caplog.records) == 1
