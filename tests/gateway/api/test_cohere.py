"""Cohere embed over the fake engine: request fields, response shapes per API version, and the
documented quantization of each embedding type."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from adapters.fake import FakeEngine, fake_vector
from gateway.api.cohere import convert
from gateway.config import InputPolicy
from tests.conftest import make_client, wait_ready

TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(dimension=16, max_model_len=8)


@pytest.fixture
def client(engine):
    with make_client(engine, InputPolicy(prompts={"query": "q: "})) as test_client:
        wait_ready(test_client)
        yield test_client


def test_v2_answers_every_type(client, engine) -> None:
    response = client.post(
        "/v2/embed",
        json={
            "model": "fake",
            "texts": ["a", "b c"],
            "input_type": "search_query",
            "embedding_types": TYPES,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert engine.calls == [["q: a", "q: b c"]]
    assert set(body) == {"id", "texts", "embeddings", "meta", "response_type"}
    assert body["texts"] == ["a", "b c"] and body["response_type"] == "embeddings_by_type"
    assert body["meta"] == {
        "api_version": {"version": "2"},
        "billed_units": {"input_tokens": 4 + 5},
    }
    expected = np.stack([fake_vector("q: a", 16), fake_vector("q: b c", 16)])
    np.testing.assert_allclose(body["embeddings"]["float"], expected, atol=1e-7)
    assert set(body["embeddings"]) == set(TYPES)
    decoded = [np.frombuffer(base64.b64decode(b), "<f4") for b in body["embeddings"]["base64"]]
    np.testing.assert_array_equal(decoded, expected)


def test_v2_defaults_to_float_by_type(client) -> None:
    body = client.post("/v2/embed", json={"model": "fake", "texts": ["a"]}).json()
    assert list(body["embeddings"]) == ["float"]


def test_v1_without_types_is_a_float_list(client) -> None:
    body = client.post("/v1/embed", json={"model": "fake", "texts": ["a"]}).json()
    assert body["response_type"] == "embeddings_floats"
    assert np.array(body["embeddings"]).shape == (1, 16)
    assert body["meta"]["api_version"] == {"version": "1"}


def test_output_dimension_truncates_and_renormalizes(client) -> None:
    body = client.post(
        "/v2/embed", json={"model": "fake", "texts": ["a"], "output_dimension": 8}
    ).json()
    vector = np.array(body["embeddings"]["float"][0])
    expected = fake_vector("a", 16)[:8]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)


def test_truncate_end_reports_in_header_and_meta(client) -> None:
    response = client.post(
        "/v2/embed", json={"model": "fake", "texts": ["a", "w " * 10], "truncate": "END"}
    )
    assert response.headers["x-truncated-inputs"] == "1"
    assert "1" in response.json()["meta"]["warnings"][0]


def test_max_tokens_truncates(client) -> None:
    response = client.post(
        "/v2/embed", json={"model": "fake", "texts": ["a b c d"], "max_tokens": 3}
    )
    assert response.headers["x-truncated-inputs"] == "0"
    assert response.json()["meta"]["billed_units"]["input_tokens"] == 3


@pytest.mark.parametrize(
    "body, param",
    [
        ({"texts": []}, "texts"),
        ({"texts": [1]}, "texts"),
        ({"images": ["data:image/png;base64,AA=="]}, "texts"),
        ({"texts": ["a"], "embedding_types": ["float16"]}, "embedding_types"),
        ({"texts": ["a"], "output_dimension": 17}, "output_dimension"),
        ({"texts": ["a"], "truncate": "MIDDLE"}, "truncate"),
        ({"texts": ["a"], "input_type": "image"}, "input_type"),
    ],
)
def test_bad_requests_are_400(client, body, param) -> None:
    response = client.post("/v2/embed", json={"model": "fake", **body})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_quantization_scheme() -> None:
    d = 64
    r = 8 / np.sqrt(d)  # int8 covers +-r
    vectors = np.array([[r, -r, r / 2, 2 * r, 0.0] + [0.01] * (d - 5)], dtype=np.float32)
    assert convert(vectors, "int8")[0][:5].tolist() == [127, -127, 64, 127, 0]
    assert convert(vectors, "uint8")[0][:5].tolist() == [255, 1, 192, 255, 128]
    bits = np.unpackbits(np.array(convert(vectors, "ubinary"), dtype=np.uint8), axis=1)
    assert bits[0].tolist() == (vectors[0] > 0).astype(int).tolist()
    ubinary = np.array(convert(vectors, "ubinary"), dtype=np.int16)
    np.testing.assert_array_equal(np.array(convert(vectors, "binary")), ubinary - 128)
    assert len(convert(vectors, "ubinary")[0]) == d // 8
