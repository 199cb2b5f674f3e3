"""The dialect is decided once per request, from the routed path."""

from __future__ import annotations

import pytest

from gateway.http.dialects import API, Dialect, dialect_of


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/embeddings", Dialect(API.OPENAI)),
        ("/embeddings", Dialect(API.OPENAI)),
        ("/v1/embed", Dialect(API.COHERE_EMBED, 1)),
        ("/v2/embed", Dialect(API.COHERE_EMBED, 2)),
        ("/rerank", Dialect(API.RERANK, 1)),
        ("/v1/rerank", Dialect(API.RERANK, 1)),
        ("/v2/rerank", Dialect(API.RERANK, 2)),
        ("/v1/v2/rerank", Dialect(API.RERANK, 2)),
        ("/v1/rerank/", Dialect(API.RERANK, 1)),
        ("/v1/models", Dialect(API.OPENAI)),
    ],
)
def test_dialect_from_path(path: str, expected: Dialect) -> None:
    assert dialect_of({"path": path}) == expected


def test_decided_once_and_kept_in_the_scope() -> None:
    scope = {"path": "/v2/rerank"}
    first = dialect_of(scope)
    scope["path"] = "/v1/embeddings"  # a later rewrite of the path changes nothing
    assert dialect_of(scope) is first


def test_only_rerank_errors_carry_detail() -> None:
    assert Dialect(API.RERANK).error_detail
    assert not Dialect(API.OPENAI).error_detail
    assert not Dialect(API.COHERE_EMBED, 2).error_detail


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/v1/v2/rerank", "/rerank"])
def test_every_error_on_rerank_paths_has_detail(client, path: str) -> None:
    response = client.post(path, json={"model": "fake"})
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == body["error"]["message"]


def test_rerank_meta_version_follows_the_path(client) -> None:
    for path, version in (("/v1/rerank", "1"), ("/v2/rerank", "2"), ("/v1/v2/rerank", "2")):
        response = client.post(path, json={"model": "fake", "query": "q", "documents": ["d"]})
        assert response.status_code == 200, response.text
        assert response.json()["meta"]["api_version"]["version"] == version
