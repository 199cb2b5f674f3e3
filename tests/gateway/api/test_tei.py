"""TEI's routes over the fake engine: /embed, /rerank with `texts`, /similarity, /tokenize,
/decode, /info and POST /; their answers and TEI's error bodies."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_logit, fake_vector
from gateway.config import InputPolicy
from tests.conftest import make_client, serving, wait_ready


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(dimension=8, max_model_len=16)


@pytest.fixture
def client(engine):
    with make_client(engine, InputPolicy(prompts={"query": "q: "})) as test_client:
        wait_ready(test_client)
        yield test_client


def unit(texts: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, 8) for t in texts])


def test_tei_embed_bare_vectors_prompt_and_dimensions(client, engine) -> None:
    response = client.post("/embed", json={"inputs": "a", "prompt_name": "query", "dimensions": 4})
    assert response.status_code == 200
    assert engine.calls[-1] == ["q: a"]
    cut = fake_vector("q: a", 8)[:4]
    np.testing.assert_allclose(response.json(), [cut / np.linalg.norm(cut)], atol=1e-6)


def test_tei_embed_normalize_false_is_the_unnormalised_vector(client, engine) -> None:
    body = client.post("/embed", json={"inputs": ["a b"], "normalize": False}).json()
    assert engine.options[-1].normalize is False
    # The fake's unnormalised vector is its unit vector times its token count (4).
    np.testing.assert_allclose(body, unit(["a b"]) * 4, atol=1e-6)


def test_tei_truncation_direction(client, engine) -> None:
    client.post("/embed", json={"inputs": "a", "truncate": True, "truncation_direction": "Left"})
    assert engine.options[-1].truncate == "start"
    client.post("/embed", json={"inputs": "a", "truncate": False})
    assert engine.options[-1].truncate == "none"


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"inputs": []}, 422, "validation"),
        ({"inputs": "a", "prompt_name": "nope"}, 422, "validation"),
        ({"inputs": "a", "dimensions": 9}, 422, "validation"),
        ({"inputs": "word " * 40}, 422, "validation"),  # longer than the window
    ],
)
def test_tei_errors_are_teis_body(client, body, status, error_type) -> None:
    response = client.post("/embed", json=body)
    assert response.status_code == status
    answer = response.json()
    assert set(answer) == {"error", "error_type"} and answer["error_type"] == error_type


def test_tei_overload_and_engine_faults_take_teis_statuses(client, engine) -> None:
    engine.fail_with = __import__("adapters.base").base.EngineFailure("boom")
    response = client.post("/embed", json={"inputs": "a"})
    assert (response.status_code, response.json()["error_type"]) == (424, "backend")


def test_tei_rerank_sorted_with_text_and_raw_scores() -> None:
    engine = FakeEngine(
        EngineSpec(name="r", model="r", rerank_kind="cross_encoder"), scores_pairs=True
    )
    with serving(r=engine) as client:
        texts = ["x y", "capital of france", "france"]
        response = client.post(
            "/rerank",
            json={
                "query": "capital of france",
                "texts": texts,
                "return_text": True,
                "raw_scores": True,
            },
        )
        assert response.status_code == 200, response.text
        logits = [fake_logit("capital of france", t) for t in texts]
        order = list(np.argsort(logits)[::-1])
        assert response.json() == [
            {"index": int(i), "score": pytest.approx(logits[i]), "text": texts[i]} for i in order
        ]


def test_rerank_path_keeps_cohere_for_documents(client) -> None:
    body = client.post("/rerank", json={"model": "fake", "query": "q", "documents": ["d"]}).json()
    assert "results" in body


def test_similarity_and_root_dispatch(client) -> None:
    body = {"inputs": {"source_sentence": "a", "sentences": ["b", "a"]}}
    for path in ("/similarity", "/"):
        scores = client.post(path, json=body).json()
        assert scores[1] == pytest.approx(1.0)
        assert scores[0] == pytest.approx(float(unit(["b"])[0] @ unit(["a"])[0]), abs=1e-6)
    assert np.array(client.post("/", json={"inputs": "a"}).json()).shape == (1, 8)


def test_tei_tokenize_and_decode(client) -> None:
    tokens = client.post("/tokenize", json={"inputs": "hello  world"}).json()
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert tokens[0][2] == {
        "id": tokens[0][2]["id"],
        "text": "world",
        "special": False,
        "start": 7,
        "stop": 12,
    }
    assert tokens[0][0]["special"] and tokens[0][0]["start"] is None
    ids = [t["id"] for t in tokens[0]]
    assert client.post("/decode", json={"ids": ids}).json() == ["hello world"]
    assert client.post("/decode", json={"ids": [ids], "skip_special_tokens": False}).json() == [
        "[CLS] hello world [SEP]"
    ]


def test_info_reports_the_model_and_limits(client) -> None:
    info = client.get("/info").json()
    assert info["model_id"] == "fake" and info["dimension"] == 8
    assert info["max_input_length"] == 16 and info["max_client_batch_size"] == 2048
