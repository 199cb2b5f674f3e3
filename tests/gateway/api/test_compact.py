"""Compact vectors on /v1/embeddings over the fake engine: Voyage's `output_dtype`,
`output_dimension`, `input_type` and `truncation`, Jina's `embedding_type`, `normalized`,
`task` and `late_chunking`, base64 of the integers' bytes, the refusals of fields that
contradict each other, and the real openai client asking through `extra_body`."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from adapters.fake import FakeEngine, fake_vector
from gateway.config import InputPolicy
from gateway.serving.quantize import DTYPES, NUMPY_TYPES, quantize
from tests.conftest import make_client, wait_ready
from tests.gateway.conftest import assert_error

# 12 dimensions: the packed types take two bytes, the second half padding.
DIMENSION = 12
TEXTS = ["a", "b c"]
INTEGER_TYPES = ["int8", "uint8", "binary", "ubinary"]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(dimension=DIMENSION, max_model_len=8)


@pytest.fixture
def client(engine):
    policy = InputPolicy(prompts={"query": "q: ", "document": "d: "})
    with make_client(engine, policy) as test_client:
        wait_ready(test_client)
        yield test_client


def floats(texts: list[str] = TEXTS) -> np.ndarray:
    return np.stack([fake_vector(text, DIMENSION) for text in texts])


def embeddings(client, **fields) -> list:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": TEXTS, **fields})
    assert response.status_code == 200, response.text
    return [item["embedding"] for item in response.json()["data"]]


@pytest.mark.parametrize("dtype", INTEGER_TYPES)
def test_output_dtype_answers_lists_of_integers(client, dtype: str) -> None:
    rows = embeddings(client, output_dtype=dtype)
    assert rows == quantize(floats(), dtype).tolist()
    assert all(isinstance(value, int) for row in rows for value in row)
    assert len(rows[0]) == (2 if "binary" in dtype else DIMENSION)


@pytest.mark.parametrize("dtype", INTEGER_TYPES)
def test_jina_embedding_type_answers_as_output_dtype_does(client, dtype: str) -> None:
    assert embeddings(client, embedding_type=dtype) == embeddings(client, output_dtype=dtype)


def test_float_is_the_default_of_both(client) -> None:
    plain = embeddings(client)
    assert embeddings(client, output_dtype="float") == plain
    assert embeddings(client, embedding_type="float") == plain
    np.testing.assert_allclose(plain, floats(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [*INTEGER_TYPES, "float"])
def test_base64_with_a_dtype_is_the_raw_bytes(client, dtype: str) -> None:
    rows = embeddings(client, output_dtype=dtype, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(row), NUMPY_TYPES[dtype]) for row in rows]
    np.testing.assert_array_equal(decoded, quantize(floats(), dtype))


def test_jina_base64_is_float32_base64(client) -> None:
    rows = embeddings(client, embedding_type="base64")
    decoded = [np.frombuffer(base64.b64decode(row), "<f4") for row in rows]
    np.testing.assert_array_equal(decoded, floats())
    assert embeddings(client, embedding_type="base64", encoding_format="base64") == rows


def test_output_dimension_cuts_renormalises_then_quantises(client) -> None:
    cut = floats()[:, :5]
    expected = quantize(cut / np.linalg.norm(cut, axis=1, keepdims=True), "int8")
    assert embeddings(client, output_dimension=5, output_dtype="int8") == expected.tolist()
    assert embeddings(client, dimensions=5, output_dtype="int8") == expected.tolist()
    same = embeddings(client, dimensions=5, output_dimension=5, output_dtype="int8")
    assert same == expected.tolist()


def test_normalized_false_answers_the_raw_vectors(client) -> None:
    raw = np.array(embeddings(client, normalized=False))
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), floats(), 1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    # Cut without renormalising; the signs (binary) need no unit length.
    np.testing.assert_allclose(
        embeddings(client, normalized=False, dimensions=5), raw[:, :5], rtol=1e-6
    )
    assert embeddings(client, normalized=False, embedding_type="ubinary") == (
        quantize(floats(), "ubinary").tolist()
    )


@pytest.mark.parametrize(
    ("fields", "prompt"),
    [
        ({"task": "retrieval.query"}, "q: "),
        ({"task": "retrieval.passage"}, "d: "),
        ({"task": "text-matching"}, ""),
        ({"task": "classification"}, ""),
        ({"input_type": "query"}, "q: "),  # Voyage's input_type is ours
        ({"input_type": "document"}, "d: "),
    ],
)
def test_task_and_input_type_pick_the_prompt(client, engine, fields: dict, prompt: str) -> None:
    embeddings(client, **fields)
    assert engine.calls == [[prompt + text for text in TEXTS]]


def test_voyage_truncation_true_cuts_the_end_false_refuses(client) -> None:
    long = "w " * 20
    response = client.post(
        "/v1/embeddings", json={"model": "fake", "input": [long], "truncation": True}
    )
    assert response.status_code == 200
    assert response.headers["x-truncated-inputs"] == "0"
    refused = client.post(
        "/v1/embeddings", json={"model": "fake", "input": [long], "truncation": False}
    )
    assert_error(refused, 400, "tokens")


@pytest.mark.parametrize(
    ("fields", "param", "fragments"),
    [
        (
            {"encoding_format": "base64", "embedding_type": "binary"},
            "encoding_format",
            ["`encoding_format: base64`", "`embedding_type: binary`"],
        ),
        (
            {"encoding_format": "float", "embedding_type": "base64"},
            "embedding_type",
            ["`encoding_format: float`", "`embedding_type: base64`"],
        ),
        (
            {"output_dtype": "int8", "embedding_type": "binary"},
            "embedding_type",
            ["`output_dtype: int8`", "`embedding_type: binary`"],
        ),
        (
            {"output_dtype": "int8", "embedding_type": "base64"},
            "embedding_type",
            ["`output_dtype: int8`", "`embedding_type: base64`"],
        ),
        (
            {"dimensions": 4, "output_dimension": 5},
            "output_dimension",
            ["`dimensions: 4`", "`output_dimension: 5`"],
        ),
        (
            {"input_type": "query", "task": "retrieval.passage"},
            "task",
            ["`input_type: query`", "`task: retrieval.passage`"],
        ),
        (
            {"truncate": "none", "truncation": True},
            "truncation",
            ["`truncate: none`", "`truncation: true`"],
        ),
        (
            {"truncate_prompt_tokens": 4, "truncation": False},
            "truncation",
            ["`truncate_prompt_tokens: 4`", "`truncation: false`"],
        ),
        (
            {"normalized": False, "output_dtype": "int8"},
            "normalized",
            ["`normalized: false`", "`output_dtype`", "int8"],
        ),
        (
            {"normalized": False, "embedding_type": "uint8"},
            "normalized",
            ["`normalized: false`", "`embedding_type`", "uint8"],
        ),
        ({"late_chunking": True}, "late_chunking", ["`late_chunking: true` is not supported"]),
        (
            {"output_dtype": "float16"},
            "output_dtype",
            ["['float', 'int8', 'uint8', 'binary', 'ubinary']", "'float16'"],
        ),
        (
            {"embedding_type": "int4"},
            "embedding_type",
            ["['float', 'base64', 'int8', 'uint8', 'binary', 'ubinary']"],
        ),
        ({"task": "retrieval"}, "task", ["'retrieval.query'", "'retrieval.passage'"]),
        ({"truncation": "yes"}, "truncation", ["`truncation` must be a boolean"]),
        ({"normalized": 0}, "normalized", ["`normalized` must be a boolean"]),
        ({"output_dimension": 13}, "output_dimension", ["`output_dimension`", "12, got 13"]),
        ({"output_dimension": 0}, "output_dimension", ["at least 1"]),
    ],
)
def test_contradictions_and_unknown_values_are_400(
    client, engine, fields: dict, param: str, fragments: list[str]
) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake", "input": TEXTS, **fields})
    assert_error(response, 400, fragments[0])
    error = response.json()["error"]
    assert error["param"] == param
    for fragment in fragments:
        assert fragment in error["message"]
    assert engine.calls == []


def test_usage_is_the_same_for_every_type(client) -> None:
    def usage(**fields) -> dict:
        body = {"model": "fake", "input": TEXTS, **fields}
        return client.post("/v1/embeddings", json=body).json()["usage"]

    assert usage(output_dtype="binary") == usage(embedding_type="int8") == usage()


def test_the_openai_client_gets_integers_through_extra_body(client) -> None:
    # The client sends `encoding_format: base64` unless told, and then decodes the answer
    # as float32: with an integer dtype, name the encoding.
    openai_client = openai.OpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )
    listed = openai_client.embeddings.create(
        model="fake", input=TEXTS, encoding_format="float", extra_body={"output_dtype": "int8"}
    )
    assert [item.embedding for item in listed.data] == quantize(floats(), "int8").tolist()
    packed = openai_client.embeddings.create(
        model="fake", input=TEXTS, encoding_format="base64", extra_body={"output_dtype": "int8"}
    )
    decoded = [np.frombuffer(base64.b64decode(item.embedding), np.int8) for item in packed.data]
    np.testing.assert_array_equal(decoded, quantize(floats(), "int8"))
    assert packed.usage == listed.usage


def test_the_openapi_document_declares_the_fields_and_integer_rows(client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schemas["EmbeddingsRequest"]["properties"]
    assert fields["output_dtype"]["anyOf"][0]["enum"] == list(DTYPES)
    assert fields["truncation"]["anyOf"][0] == {"type": "boolean"}
    assert fields["embedding_type"]["anyOf"][0]["enum"][:2] == ["float", "base64"]
    assert "retrieval.query" in fields["task"]["anyOf"][0]["enum"]
    assert {"output_dimension", "normalized", "late_chunking"} <= set(fields)
    row = schemas["Embedding"]["properties"]["embedding"]["anyOf"]
    assert {"items": {"type": "integer"}, "type": "array"} in row


def test_compact_fields_apply_to_the_dense_vector_beside_sparse_and_token_vectors() -> None:
    engine = FakeEngine(dimension=DIMENSION, outputs=("dense", "sparse", "multivector"))
    with make_client(engine) as client:
        wait_ready(client)
        response = client.post(
            "/v1/embeddings",
            json={
                "model": "fake",
                "input": TEXTS,
                "output_dtype": "int8",
                "output_dimension": 8,
                "return_sparse": True,
                "return_colbert_vecs": True,
            },
        )
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    cut = floats()[:, :8] / np.linalg.norm(floats()[:, :8], axis=1, keepdims=True)
    assert [item["embedding"] for item in items] == quantize(cut, "int8").tolist()
    assert all(item["sparse_embedding"]["indices"] for item in items)
    assert [len(item["colbert_vecs"][0]) for item in items] == [DIMENSION, DIMENSION]
