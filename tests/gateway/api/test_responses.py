"""Every route answers as /openapi.json says: for each documented operation, live requests on
the fake-engine app (each body shape a path accepts, and a refused body), each answer's status
documented and its body valid against the document's schema for that status."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from adapters.base import EngineSpec
from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.config import InputPolicy
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import TIKTOKEN_DIR, wait_ready

EMBED = {"model": "fake", "input": ["a b", "c"]}
RERANK = {"model": "fake", "query": "a", "documents": ["a b", {"text": "c", "id": 1}]}
TEI_RERANK = {"query": "a", "texts": ["a b", "c"], "return_text": True}
SIMILARITY = {"inputs": {"source_sentence": "a", "sentences": ["a b", "c"]}}
SCORES = [{"text_1": "a", "text_2": ["a b", "c"]}, {"queries": ["a", "b"], "documents": ["a", "c"]}]
# (method, documented path) -> the bodies to send (None: no body); `{ids}` and `{file_id}`,
# `{batch_id}` are filled in from earlier answers.
CALLS: dict[tuple[str, str], list[Any]] = {
    ("post", "/v1/embeddings"): [
        EMBED,
        {**EMBED, "encoding_format": "base64"},
        {**EMBED, "output_dtype": "int8"},
        {**EMBED, "embedding_type": "ubinary"},
        {**EMBED, "output_dtype": "uint8", "encoding_format": "base64"},
        {**EMBED, "return_dense": False, "return_sparse": True, "return_colbert_vecs": True},
        {**EMBED, "model": "labels", "return_sparse": True},
        {},
    ],
    ("post", "/embeddings"): [EMBED, {}],
    ("post", "/v1/embed"): [
        {"model": "fake", "texts": ["a"]},
        {"model": "fake", "texts": ["a", "b"], "embedding_types": ["float", "int8", "ubinary"]},
        {"model": "fake", "texts": ["a"], "embedding_types": ["uint8", "binary", "base64"]},
        {},
    ],
    ("post", "/v2/embed"): [{"model": "fake", "texts": ["a"], "embedding_types": ["float"]}, {}],
    ("post", "/rerank"): [RERANK, TEI_RERANK, {"query": "a", "texts": []}, {}],
    ("post", "/v1/rerank"): [
        RERANK,
        {**RERANK, "return_documents": False, "top_n": 1},
        {**RERANK, "mode": "colbert"},
        {**RERANK, "mode": "hybrid", "weights": [1, 0.5, 1]},
        {**RERANK, "mode": "hybrid", "weights": [0, 0, 0]},
        {},
    ],
    ("post", "/v2/rerank"): [RERANK, {}],
    ("post", "/v1/v2/rerank"): [RERANK, {}],
    ("get", "/v1/models"): [None],
    ("get", "/models"): [None],
    ("get", "/v1/models/{model}"): [None],
    ("get", "/models/{model}"): [None],
    ("get", "/health"): [None],
    ("get", "/ready"): [None],
    ("get", "/openapi.json"): [None],
    ("post", "/embed"): [{"texts": ["a", "b"]}, {"inputs": "a"}, {"texts": []}, {}],
    ("post", "/"): [
        {"inputs": ["a", "b"]},
        SIMILARITY,
        TEI_RERANK,
        {"inputs": ["a", "b"], "model": "labels"},
        {},
    ],
    ("post", "/embed_sparse"): [{"inputs": ["a b", "c"]}, {"inputs": "a", "model": "labels"}, {}],
    ("post", "/embed_all"): [{"inputs": "a b"}, {"inputs": ["a", "b"], "model": "labels"}, {}],
    ("post", "/predict"): [
        {"inputs": "a", "model": "labels"},
        {"inputs": [["a"], ["b", "c"]], "model": "labels", "raw_scores": True},
        {"inputs": "a"},
        {},
    ],
    ("post", "/similarity"): [SIMILARITY, {}],
    ("post", "/tokenize"): [
        {"inputs": ["a b", "c"]},
        {"prompt": "a b", "return_token_strs": True},
        {"prompt": "a"},
        {},
    ],
    ("post", "/decode"): [{"ids": "{ids}"}, {"ids": ["{ids}", "{ids}"]}, {}],
    ("get", "/info"): [None],
    ("post", "/score"): [*SCORES, {}],
    ("post", "/v1/score"): [*SCORES, {}],
    ("post", "/detokenize"): [{"tokens": "{ids}"}, {}],
    ("post", "/pooling"): [
        {"input": ["a b", "c"]},
        {"input": "a b", "task": "token_embed"},
        {"input": "a", "task": "embed", "encoding_format": "base64"},
        {"input": ["a", "b"], "task": "classify", "model": "labels"},
        {"input": "a", "task": "token_classify"},
        {},
    ],
    ("post", "/classify"): [{"input": ["a", "b"], "model": "labels"}, {"input": "a"}, {}],
    ("post", "/api/embed"): [
        {"model": "fake", "input": ["a b", "c"], "dimensions": 3},
        {"model": "fake:latest", "input": ""},
        {"model": "nope", "input": "a"},
        {},
    ],
    ("post", "/api/embeddings"): [{"model": "fake", "prompt": "a"}, {"model": "fake"}, {}],
    ("get", "/api/tags"): [None],
    ("post", "/api/show"): [{"model": "fake"}, {"name": "pairs:latest"}, {}],
    ("get", "/api/ps"): [None],
    ("get", "/api/version"): [None],
    ("post", "/v1/files"): ["upload", "bad upload"],
    ("get", "/v1/files"): [None],
    ("get", "/v1/files/{file_id}"): [None],
    ("post", "/v1/batches"): [
        {"input_file_id": "{file_id}", "endpoint": "/v1/embeddings", "completion_window": "24h"},
        {"input_file_id": "{file_id}", "endpoint": "/v1/chat", "completion_window": "24h"},
    ],
    ("get", "/v1/batches"): [None],
    ("get", "/v1/batches/{batch_id}"): [None],
    ("post", "/v1/batches/{batch_id}/cancel"): [None],
    ("delete", "/v1/files/{file_id}"): [None],
}
# Answers that are not JSON: what they are instead.
NOT_JSON = {
    ("get", "/metrics"): "text/plain",
    ("get", "/v1/files/{file_id}/content"): "application/octet-stream",
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    engine = FakeEngine(dimension=8, max_model_len=64, outputs=("dense", "sparse", "multivector"))
    classifier = FakeEngine(EngineSpec(name="labels", model="labels"), outputs=("classify",))
    scorer = FakeEngine(
        EngineSpec(name="pairs", model="pairs", rerank_kind="cross_encoder"), scores_pairs=True
    )
    registry = ModelRegistry(
        [
            ServedModel("fake", (), engine, InputPolicy(prompts={"query": "q: "}), default=True),
            ServedModel("pairs", (), scorer, default=True),
            ServedModel("labels", (), classifier),
        ]
    )
    with TestClient(
        create_app(registry, tiktoken_dir=TIKTOKEN_DIR), raise_server_exceptions=False
    ) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_every_documented_operation_is_called(document: dict[str, Any]) -> None:
    documented = {(m, p) for p, item in document["paths"].items() for m in item}
    assert documented == set(CALLS) | set(NOT_JSON)


def test_every_answer_is_documented_and_valid(client: TestClient, document) -> None:
    filled: dict[str, Any] = {}
    filled["ids"] = client.post("/tokenize", json={"prompt": "a b"}).json()["tokens"]
    statuses: dict[tuple[str, str], set[int]] = {}
    for (method, path), bodies in CALLS.items():
        for body in bodies:
            response = _call(client, method, path, body, filled)
            statuses.setdefault((method, path), set()).add(response.status_code)
            _remember(path, response, filled)
            _check(document, method, path, response)
    # Each operation succeeded at least once (a one-line batch may be done before it is
    # cancelled: its cancel answers 400, checked above all the same).
    unanswered = [op for op, seen in statuses.items() if 200 not in seen]
    assert set(unanswered) <= {("post", "/v1/batches/{batch_id}/cancel")}, unanswered


def test_answers_that_are_not_json_have_their_documented_type(client, document) -> None:
    upload = client.post("/v1/files", data={"purpose": "batch"}, files=_upload(b"{}\n"))
    file_id = upload.json()["id"]
    for (method, path), media_type in NOT_JSON.items():
        response = client.request(method.upper(), path.replace("{file_id}", file_id))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        content = document["paths"][path][method]["responses"]["200"]["content"]
        assert media_type in content


def _call(client: TestClient, method: str, path: str, body: Any, filled: dict[str, Any]):
    url = path.replace("{model}", "fake")
    for name in ("file_id", "batch_id"):
        url = url.replace("{" + name + "}", str(filled.get(name)))
    if body == "upload":
        line = orjson.dumps(
            {"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": EMBED}
        )
        return client.post("/v1/files", data={"purpose": "batch"}, files=_upload(line + b"\n"))
    if body == "bad upload":
        return client.post("/v1/files", data={"purpose": "nothing"}, files=_upload(b"{}\n"))
    if body is None:
        return client.request(method.upper(), url)
    return client.request(method.upper(), url, json=_fill(body, filled))


def _upload(content: bytes) -> dict[str, Any]:
    return {"file": ("input.jsonl", io.BytesIO(content), "application/jsonl")}


def _fill(value: Any, filled: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return filled[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, filled) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, filled) for v in value]
    return value


def _remember(path: str, response, filled: dict[str, Any]) -> None:
    if response.status_code != 200:
        return
    if path == "/v1/files" and "id" in response.json():
        filled["file_id"] = response.json()["id"]
    if path == "/v1/batches" and "id" in response.json():
        filled["batch_id"] = response.json()["id"]


def _check(document: dict[str, Any], method: str, path: str, response) -> None:
    where = f"{method.upper()} {path} -> {response.status_code}: {response.text[:300]}"
    responses = document["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, where
    described = _resolve(responses[str(response.status_code)], document)
    schema = described["content"]["application/json"]["schema"]
    validator = Draft202012Validator(
        {"$ref": "#/answer", "answer": schema, "components": document["components"]}
    )
    errors = [e.message for e in validator.iter_errors(response.json())]
    assert errors == [], where


def _resolve(node: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node
