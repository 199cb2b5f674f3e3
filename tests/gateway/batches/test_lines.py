"""Batch lines answered as the route answers their bodies (fake engine, the real runner):
compact vectors, sparse and token vectors, and their refusals come out of a batch as they come
out of /v1/embeddings."""

from __future__ import annotations

from pathlib import Path

from adapters.fake import FakeEngine
from tests.conftest import serving
from tests.gateway.batches.test_api import AUTH, settings
from tests.gateway.batches.test_runner_faults import content, counts, run_batch

TEXTS = ["a b", "c", "d e f"]
BODIES = [
    {"model": "fake", "input": TEXTS, "output_dtype": "int8"},
    {"model": "fake", "input": TEXTS, "embedding_type": "binary", "dimensions": 5},
    {"model": "fake", "input": TEXTS, "output_dtype": "ubinary", "encoding_format": "base64"},
    {"model": "fake", "input": TEXTS, "task": "retrieval.query", "embedding_type": "uint8"},
]
REFUSED = {"model": "fake", "input": "x", "encoding_format": "base64", "embedding_type": "int8"}


def test_quantised_lines_answer_as_the_route_does(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        batch = run_batch(client, *BODIES, REFUSED)
        assert counts(batch) == (5, 4, 1)
        answers = {
            line["custom_id"]: line["response"] for line in content(client, batch["output_file_id"])
        }
        for i, body in enumerate(BODIES):
            route = client.post("/v1/embeddings", json=body, headers=AUTH)
            assert route.status_code == 200
            assert answers[f"r{i}"]["status_code"] == 200
            assert answers[f"r{i}"]["body"] == route.json()
        integers = answers["r0"]["body"]["data"][0]["embedding"]
        assert all(isinstance(value, int) for value in integers)
        (error,) = content(client, batch["error_file_id"])
        direct = client.post("/v1/embeddings", json=REFUSED, headers=AUTH)
        assert direct.status_code == error["response"]["status_code"] == 400
        assert error["response"]["body"]["error"] == direct.json()["error"]
        assert error["response"]["body"]["error"]["param"] == "encoding_format"


def test_sparse_and_token_vector_lines_answer_as_the_route_does(tmp_path: Path) -> None:
    model = FakeEngine(outputs=("dense", "sparse", "multivector"))
    asked = {"model": "fake", "input": TEXTS, "return_sparse": True, "return_colbert_vecs": True}
    lacking = {"model": "fake", "input": "x", "return_sparse": True}
    with serving(settings(tmp_path), fake=model, dense=FakeEngine()) as client:
        batch = run_batch(client, asked, {**lacking, "model": "dense"})
        assert counts(batch) == (2, 1, 1)
        (line,) = content(client, batch["output_file_id"])
        route = client.post("/v1/embeddings", json=asked, headers=AUTH)
        assert route.status_code == line["response"]["status_code"] == 200
        assert line["response"]["body"] == route.json()
        item = line["response"]["body"]["data"][0]
        assert item["sparse_embedding"]["indices"] and item["colbert_vecs"]
        (error,) = content(client, batch["error_file_id"])
        assert error["response"]["status_code"] == 400
        assert "has no sparse output" in error["response"]["body"]["error"]["message"]
