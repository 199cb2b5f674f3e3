"""The other servers' routes over the fake engine: the texts API's and TEI's /embed, TEI's rerank,
similarity, tokenize, decode, info and POST /, vLLM's score, tokenize and detokenize,
GET /v1/models/{id}; their answers and error bodies, and the default model."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_logit, fake_vector
from gateway.config import InputPolicy, Settings
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


def test_texts_embed_answers_embeddings_without_a_model(client) -> None:
    response = client.post("/embed", json={"texts": ["a", "b c"]})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["embeddings"]
    np.testing.assert_allclose(body["embeddings"], unit(["a", "b c"]), atol=1e-7)


def test_texts_errors_are_the_envelope_with_detail(client) -> None:
    response = client.post("/embed", json={"texts": []})
    assert response.status_code == 400
    body = response.json()
    assert (
        body["detail"]
        == body["error"]["message"]
        == "`texts` is required: a non-empty list of strings"
    )


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


def test_vllm_tokenize_and_detokenize(client) -> None:
    body = client.post("/tokenize", json={"prompt": "a b", "return_token_strs": True}).json()
    assert body["count"] == 4 and body["max_model_len"] == 16
    assert body["token_strs"] == ["[CLS]", "a", "b", "[SEP]"]
    assert client.post("/detokenize", json={"tokens": body["tokens"][1:3]}).json() == {
        "prompt": "a b"
    }
    chat = client.post("/tokenize", json={"messages": [{"role": "user", "content": "a"}]})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "prompt"
    assert client.post("/detokenize", json={"tokens": [10**6]}).status_code == 400


def test_vllm_score_pairs() -> None:
    engine = FakeEngine(
        EngineSpec(name="r", model="r", rerank_kind="cross_encoder"), scores_pairs=True
    )
    with serving(r=engine) as client:
        one = client.post("/score", json={"text_1": "a b", "text_2": ["a", "c"]}).json()
        assert one["object"] == "list" and one["model"] == "r"
        expected = [1 / (1 + np.exp(-fake_logit("a b", d))) for d in ("a", "c")]
        assert [d["score"] for d in one["data"]] == pytest.approx(expected)
        pairwise = client.post(
            "/v1/score", json={"queries": ["a", "c"], "documents": ["a", "a"]}
        ).json()
        assert [d["score"] for d in pairwise["data"]] == pytest.approx(
            [1 / (1 + np.exp(-fake_logit(q, "a"))) for q in ("a", "c")]
        )
        bad = client.post("/score", json={"text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
        assert bad.status_code == 400


def test_retrieve_model(client) -> None:
    assert client.get("/v1/models/fake").json()["id"] == "fake"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_info_reports_the_model_and_limits(client) -> None:
    info = client.get("/info").json()
    assert info["model_id"] == "fake" and info["dimension"] == 8
    assert info["max_input_length"] == 16 and info["max_client_batch_size"] == 2048


def test_several_embedding_models_without_a_default_is_a_400_listing_them() -> None:
    with serving(one=FakeEngine(), two=FakeEngine()) as client:
        response = client.post("/embed", json={"texts": ["a"]})
        assert response.status_code == 400
        assert "['one', 'two']" in response.json()["error"]["message"]
        assert client.post("/embed", json={"texts": ["a"], "model": "two"}).status_code == 200


def test_the_model_marked_default_answers() -> None:
    from starlette.testclient import TestClient

    from gateway.app import create_app
    from gateway.serving.registry import ModelRegistry, ServedModel

    one, two = FakeEngine(), FakeEngine()
    registry = ModelRegistry(
        [ServedModel("one", (), one), ServedModel("two", (), two, default=True)]
    )
    with TestClient(create_app(registry, Settings())) as client:
        wait_ready(client)
        assert client.post("/embed", json={"texts": ["a"]}).status_code == 200
        assert two.calls and not one.calls
