"""/v1/embeddings, /v1/models, /health and /ready over the fake engine: the wire contract."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
import pytest
from starlette.testclient import TestClient

from adapters.base import EngineFailure, EngineUnavailable
from adapters.fake import FakeEngine, fake_vector
from gateway.app import create_app
from gateway.config import Settings
from gateway.serving.cache import CachingEngine, EmbeddingCache
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import TIKTOKEN_DIR, make_client, wait_ready

KEY = "key-0123456789abcdef0123456789abcdef"


def test_list_input_answers_openai_shape_in_order(client) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": ["a b", "c"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": body["data"][0]["embedding"]},
            {"object": "embedding", "index": 1, "embedding": body["data"][1]["embedding"]},
        ],
        "model": "fake",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    np.testing.assert_allclose(body["data"][0]["embedding"], fake_vector("a b", 8), rtol=1e-6)
    np.testing.assert_allclose(body["data"][1]["embedding"], fake_vector("c", 8), rtol=1e-6)


def test_string_input_and_unprefixed_route(client) -> None:
    response = client.post("/embeddings", json={"model": "fake-alias", "input": "x"})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


def test_empty_string_is_embedded(client) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": ""})
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 2


def test_base64_is_little_endian_float32(client) -> None:
    response = client.post(
        "/v1/embeddings", json={"model": "fake", "input": ["a"], "encoding_format": "base64"}
    )
    encoded = response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_array_equal(decoded, fake_vector("a", 8))


def test_dimensions_keep_prefix_and_renormalize(client) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": "a", "dimensions": 3})
    vector = np.array(response.json()["data"][0]["embedding"])
    full = fake_vector("a", 8)
    np.testing.assert_allclose(vector, full[:3] / np.linalg.norm(full[:3]), rtol=1e-6)


def test_user_and_unknown_fields_are_ignored(client) -> None:
    response = client.post(
        "/v1/embeddings",
        json={"model": "fake", "input": "a", "user": "u1", "something_new": {"x": 1}},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "fake", "input": []}, "input", "must not be an empty list"),
        ({"model": "fake"}, "input", "`input` is required"),
        ({"model": "fake", "input": 3.5}, "input", "got float"),
        ({"model": "fake", "input": ["a", None]}, "input", "`input[1]` must be a string"),
        (
            {"model": "fake", "input": [[1, "a"]]},
            "input",
            "`input[0]` must be a string or a list of token ids",
        ),
        ({"input": "a"}, "model", "`model` is required"),
        (
            {"model": "fake", "input": "a", "encoding_format": "int8"},
            "encoding_format",
            "must be one of ['float', 'base64']",
        ),
        ({"model": "fake", "input": "a", "dimensions": 0}, "dimensions", "at least 1"),
        ({"model": "fake", "input": "a", "dimensions": 9}, "dimensions", "dimension 8, got 9"),
        ({"model": "fake", "input": "a", "dimensions": "4"}, "dimensions", "must be an integer"),
        ({"model": "fake", "input": "a", "dimensions": True}, "dimensions", "must be an integer"),
        (
            {
                "model": "fake",
                "input": "one two three four five six seven eight nine ten eleven "
                "twelve thirteen fourteen fifteen",
            },
            "input",
            "input 0 has 17 tokens",
        ),
    ],
)
def test_invalid_requests_are_400_envelopes(client, body, param, fragment) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_body_must_be_an_object(client) -> None:
    response = client.post("/v1/embeddings", json=["a"])
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]["message"]


def test_malformed_json_is_400(client) -> None:
    response = client.post(
        "/v1/embeddings", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_unknown_model_is_404_model_not_found(client) -> None:
    response = client.post("/v1/embeddings", json={"model": "gpt", "input": "a"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.json()["error"]["param"] == "model"


def test_unknown_route_and_wrong_method_use_the_envelope(client) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/embeddings")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_engine_failure_is_500_without_internals(client, fake_engine) -> None:
    fake_engine.fail_with = EngineFailure("the engine failed while processing the request")
    response = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
    assert response.status_code == 500
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "server_error"


def test_unexpected_exception_is_generic_500(client, fake_engine) -> None:
    fake_engine.fail_with = RuntimeError("secret internals")
    response = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
    assert response.status_code == 500
    assert "secret" not in response.text
    request_id = response.headers["x-request-id"]
    assert response.json()["error"]["message"] == f"internal server error (request id {request_id})"


def test_unavailable_engine_is_503_and_ready_flips(client, fake_engine) -> None:
    fake_engine.fail_with = EngineUnavailable("the engine has stopped")
    response = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert client.get("/ready").status_code == 503
    # Once marked failed, new requests are refused without reaching the engine.
    calls = len(fake_engine.calls)
    assert client.post("/v1/embeddings", json={"model": "fake", "input": "a"}).status_code == 503
    assert len(fake_engine.calls) == calls


def test_non_finite_vector_is_500_naming_the_index(client, fake_engine) -> None:
    fake_engine.nan_marker = "POISON"
    response = client.post("/v1/embeddings", json={"model": "fake", "input": ["a", "b POISON"]})
    assert response.status_code == 500
    assert "input 1" in response.json()["error"]["message"]
    assert "NaN" not in response.text and "nan" not in response.text.replace("non-finite", "")
    # The poisoned input does not take the model down: other requests still get vectors.
    assert client.post("/v1/embeddings", json={"model": "fake", "input": ["a"]}).status_code == 200
    assert client.get("/ready").status_code == 200


def test_models_lists_names_and_aliases(client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["root"], m["object"]) for m in body["data"]] == [
        ("fake", "fake", "model"),
        ("fake-alias", "fake", "model"),
    ]


def test_health_and_ready(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {"fake": "ready"}}


def test_token_id_lists_are_accepted(client, fake_engine) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": [[15339, 1917]]})
    assert response.status_code == 200
    assert fake_engine.calls == [["hello world"]]


def test_retrieve_model(client) -> None:
    assert client.get("/v1/models/fake").json()["id"] == "fake"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


# -- FlagEmbedding's outputs: return_dense, return_sparse, return_colbert_vecs ----------------


@pytest.fixture
def m3():
    engine = FakeEngine(dimension=4, max_model_len=32, outputs=("dense", "sparse", "multivector"))
    with make_client(engine) as test_client:
        wait_ready(test_client)
        yield test_client, engine


def expected_sparse(engine: FakeEngine, text: str) -> dict[str, list]:
    vector = asyncio.run(engine.embed_sparse([text])).vectors[0]
    return {"indices": vector.indices.tolist(), "values": vector.values.tolist()}


def test_return_sparse_and_colbert_vecs_come_with_the_dense_vector(m3) -> None:
    client, engine = m3
    body = {"model": "fake", "input": ["a b a", "c"], "return_sparse": True}
    answer = client.post("/v1/embeddings", json={**body, "return_colbert_vecs": True}).json()
    first, second = answer["data"]
    assert set(first) == {"object", "index", "embedding", "sparse_embedding", "colbert_vecs"}
    np.testing.assert_allclose(first["embedding"], fake_vector("a b a", 4), rtol=1e-6)
    assert first["sparse_embedding"]["indices"] == expected_sparse(engine, "a b a")["indices"]
    np.testing.assert_allclose(
        first["sparse_embedding"]["values"], expected_sparse(engine, "a b a")["values"], rtol=1e-6
    )
    np.testing.assert_allclose(
        first["colbert_vecs"], [fake_vector(w, 4) for w in ("a", "b", "a", "[SEP]")], rtol=1e-6
    )
    # Every token but the first: the last ([SEP]) is kept.
    assert len(second["colbert_vecs"]) == 2
    # Tokens count once, not once per output: as the dense vectors alone.
    dense_only = client.post("/v1/embeddings", json={"model": "fake", "input": ["a b a", "c"]})
    assert answer["usage"] == dense_only.json()["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


def test_return_dense_false_answers_a_null_embedding(m3) -> None:
    client, _ = m3
    body = {"model": "fake", "input": "a", "return_dense": False, "return_sparse": True}
    item = client.post("/v1/embeddings", json=body).json()["data"][0]
    assert item["embedding"] is None and set(item["sparse_embedding"]) == {"indices", "values"}


def test_base64_applies_to_the_dense_vector_only(m3) -> None:
    client, _ = m3
    body = {"model": "fake", "input": "a b", "encoding_format": "base64"}
    item = client.post("/v1/embeddings", json={**body, "return_colbert_vecs": True}).json()["data"][
        0
    ]
    decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, fake_vector("a b", 4), rtol=1e-6)
    np.testing.assert_allclose(
        item["colbert_vecs"], [fake_vector(w, 4) for w in ("a", "b", "[SEP]")], rtol=1e-6
    )


def test_an_output_the_model_lacks_or_none_at_all_is_400(client) -> None:
    body = {"model": "fake", "input": "a", "return_colbert_vecs": True}
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "model 'fake' has no multivector output; it computes: dense"
    )
    response = client.post(
        "/v1/embeddings", json={**body, "return_colbert_vecs": False, "return_dense": False}
    )
    assert response.status_code == 400
    assert "at least one output" in response.json()["error"]["message"]


def test_the_dense_vector_comes_from_the_cache_with_the_other_outputs() -> None:
    engine = FakeEngine(dimension=4, max_model_len=32, outputs=("dense", "sparse"))
    registry = ModelRegistry([ServedModel("fake", (), CachingEngine(engine, EmbeddingCache(16)))])
    settings = Settings(api_keys=(KEY,))
    with TestClient(create_app(registry, settings, tiktoken_dir=TIKTOKEN_DIR)) as client:
        wait_ready(client)
        headers = {"authorization": f"Bearer {KEY}"}
        body = {"model": "fake", "input": ["a b"], "return_sparse": True}
        first = client.post("/v1/embeddings", json=body, headers=headers).json()
        second = client.post("/v1/embeddings", json=body, headers=headers).json()
    assert first == second
    # The sparse weights are computed each time, the dense vector once.
    assert engine.calls == [["a b"], ["a b"], ["a b"]]


def test_the_openai_client_reads_sparse_and_colbert_outputs_through_extra_body(m3) -> None:
    client, engine = m3
    api = openai.OpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )
    extra = {"return_sparse": True, "return_colbert_vecs": True}
    result = api.embeddings.create(model="fake", input=["a b"], extra_body=extra)
    item = result.data[0]
    # The client asks for base64 by default and decodes `embedding`; the others are extras.
    np.testing.assert_allclose(item.embedding, fake_vector("a b", 4), rtol=1e-6)
    assert (
        item.model_extra["sparse_embedding"]["indices"] == expected_sparse(engine, "a b")["indices"]
    )
    assert len(item.model_extra["colbert_vecs"]) == 3
    assert result.usage.prompt_tokens == 4
    without_dense = api.embeddings.create(
        model="fake", input="a", extra_body={"return_dense": False, "return_sparse": True}
    )
    assert without_dense.data[0].embedding is None
    assert without_dense.data[0].model_extra["sparse_embedding"]["values"]
