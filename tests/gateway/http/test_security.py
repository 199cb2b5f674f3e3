"""Authentication on every route, decided on the ASGI path; CORS off unless configured."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from adapters.fake import FakeEngine
from gateway import batches
from gateway.api.routes import ROUTES
from gateway.config import Settings
from gateway.http.dialects import API, dialect_of
from gateway.http.security import exposure_warning
from gateway.tenancy import KeyRing
from tests.conftest import serving

KEYS = ("key-one", "key-two")
# /openapi.json is public for /docs (gateway/http/docs.py); the calls the page makes are not.
PUBLIC = {"/health", "/ready", "/openapi.json"}
# Accepted by every POST route but those in BODIES: each reads its own fields (`input`,
# `texts`, `query` and `documents`) and ignores the others.
EMBED = {"model": "fake", "input": "a", "texts": ["a"], "query": "a", "documents": ["a"]}
BODIES = {
    "/similarity": {"inputs": {"source_sentence": "a", "sentences": ["b"]}},
    "/tokenize": {"inputs": "a b"},
    "/decode": {"ids": [1]},
    "/score": {"text_1": "a", "text_2": ["b"]},
    "/v1/score": {"text_1": "a", "text_2": "b"},
    "/detokenize": {"tokens": [1]},
    "/embed_sparse": {"inputs": "a"},
    "/embed_all": {"inputs": "a"},
    "/predict": {"inputs": "a"},
}
# One model that computes every output, so that every route can answer.
OUTPUTS = ("dense", "sparse", "multivector", "classify")


@pytest.fixture
def locked():
    with serving(Settings(api_keys=KEYS), fake=FakeEngine(outputs=OUTPUTS)) as client:
        yield client


def call(client, route: Route, path: str | None = None, **kwargs):
    method = min(route.methods - {"HEAD"})
    body = {"json": BODIES.get(route.path, EMBED)} if method == "POST" else {}
    return client.request(
        method, path or route.path.replace("{model:path}", "fake"), **body, **kwargs
    )


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.path)
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        "Basic a2V5LW9uZQ==",
        "Bearer",
        "key-one",
        "Bearer key-one-and-more",
        "Bearer key-on",
    ],
)
def test_every_non_public_route_refuses_a_missing_or_wrong_key(locked, route, header) -> None:
    headers = {"Authorization": header} if header else {}
    response = call(locked, route, headers=headers)
    if route.path in PUBLIC:
        assert response.status_code == 200
        return
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    api = dialect_of({"path": route.path}).api
    if api is API.TEI:  # TEI's own error body
        assert response.json()["error_type"] == "invalid_api_key"
    elif api is API.OLLAMA:  # Ollama's `{"error": message}`
        assert list(response.json()) == ["error"]
    else:
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert "key-one" not in response.text


# The Batch API's routes answer 200 only for a file or batch that exists: with a key they are
# checked on real ids in tests/gateway/batches/test_api.py.
@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r not in batches.ROUTES], ids=lambda r: r.path
)
@pytest.mark.parametrize(
    "header", ["Bearer key-one", "Bearer key-two", "bearer key-two", "BEARER  key-one"]
)
def test_every_route_accepts_each_configured_key(locked, route, header) -> None:
    assert call(locked, route, headers={"Authorization": header}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "//v1/embeddings",
        "/v1/embeddings/",
        "/V1/embeddings",
        "/v1%2Fembeddings",
        "/health/../v1/embeddings",
        "/health/%2e%2e/v1/embeddings",
        "/ready/../v1/models",
        "/./v1/embeddings",
        "/health/",
        "/Health",
        "/healthz",
        "/health%00",
        "/metrics",
        "/v1/rerank",
        "/rerank",
        "/docs/../v1/embeddings",
        "/docs/index.html",
        "/docs/",
        "/",
        "/openapi.json/",
        "/v1/models/../embed",
    ],
)
def test_path_tricks_are_not_public(locked, path) -> None:
    response = locked.post(path, json=EMBED)
    assert response.status_code == 401


@pytest.mark.parametrize("host", ["x/v1?", "a?b", "localhost/health?", "evil/health#"])
def test_host_header_cannot_change_the_path_auth_sees(locked, host) -> None:
    response = locked.post("/v1/embeddings", json=EMBED, headers={"Host": host})
    assert response.status_code == 401


def test_metrics_is_public_only_when_configured() -> None:
    with serving(Settings(api_keys=KEYS, public_metrics=True)) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/models").status_code == 401
    with serving(Settings(api_keys=KEYS)) as client:
        assert client.get("/metrics").status_code == 401
        authorized = client.get("/metrics", headers={"Authorization": "Bearer key-one"})
        assert authorized.status_code == 200
        assert "embedding_gateway_requests_total" in authorized.text


def test_no_keys_means_no_authentication(client) -> None:
    assert client.post("/v1/embeddings", json=EMBED).status_code == 200


def test_key_ring_compares_every_key() -> None:
    ring = KeyRing(KEYS)
    assert ring.identify(b"key-one") and ring.identify(b"key-two")
    assert ring.identify(b"key-three") is None and ring.identify(b"") is None
    assert not KeyRing([])


def test_cors_is_off_by_default(client) -> None:
    response = client.options(
        "/v1/embeddings",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers
    simple = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_the_configured_origins() -> None:
    settings = Settings(api_keys=KEYS, cors_allow_origins=("https://app.example",))
    with serving(settings) as client:
        preflight = client.options(
            "/v1/embeddings",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in preflight.headers
        evil = client.options(
            "/v1/embeddings",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in evil.headers


def test_websockets_are_refused_without_a_key(locked) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as info, locked.websocket_connect("/v1/embeddings"):
        pass
    assert info.value.code == 1008


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_refusals_on_rerank_paths_carry_detail_for_jina_clients(locked, path) -> None:
    response = locked.post(path, json=EMBED)
    assert response.status_code == 401
    assert response.json()["detail"] == response.json()["error"]["message"]


def test_refusals_elsewhere_are_the_plain_envelope(locked) -> None:
    assert set(locked.post("/v1/embeddings", json=EMBED).json()) == {"error"}


def test_docs_page_its_files_and_the_document_are_public(locked) -> None:
    page = locked.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert locked.get("/docs/swagger-ui-bundle.js").status_code == 200
    assert locked.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert locked.get("/openapi.json").status_code == 200
    # Only the page's own files: anything else under /docs is an ordinary, locked path.
    assert locked.get("/docs/swagger-initializer.js").status_code == 401
    assert locked.post("/docs", json=EMBED).status_code == 405


@pytest.mark.parametrize(
    "host, keys, warned",
    [
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("10.1.2.3", (), True),
        ("127.0.0.1", (), False),
        ("::1", (), False),
        ("localhost", (), False),
        ("0.0.0.0", ("k",), False),
    ],
)
def test_serving_beyond_loopback_without_keys_is_warned(host, keys, warned) -> None:
    warning = exposure_warning(host, keys)
    assert (warning is not None) == warned
    if warned:
        assert host in warning and "--api-key" in warning


def test_private_docs_put_the_page_and_the_document_behind_the_key() -> None:
    with serving(Settings(api_keys=KEYS, private_docs=True)) as client:
        for path in ("/docs", "/docs/swagger-ui-bundle.js", "/openapi.json"):
            assert client.get(path).status_code == 401, path
        keyed = {"Authorization": f"Bearer {KEYS[0]}"}
        assert client.get("/openapi.json", headers=keyed).status_code == 200
        assert client.get("/docs", headers=keyed).status_code == 200
        assert client.get("/health").status_code == 200
