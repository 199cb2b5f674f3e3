"""/v1/embeddings, /v1/models, /health and /ready over the fake engine: the wire contract."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from adapters.base import EngineFailure, EngineUnavailable
from adapters.fake import fake_vector


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
