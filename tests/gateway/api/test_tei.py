"""TEI's routes over the fake engine: /embed, /rerank with `texts`, /similarity, /tokenize,
/decode, /info and POST /; their answers and TEI's error bodies."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_logit, fake_vector, fake_weight
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


# -- /embed_sparse, /embed_all, /predict, and / for classifiers and sparse-only models --------


@pytest.fixture
def outputs_client():
    """`m3`: dense, sparse and token vectors; `labels`: a classifier;
    `splade`: sparse only."""
    with serving(
        m3=FakeEngine(dimension=4, max_model_len=16, outputs=("dense", "sparse", "multivector")),
        labels=FakeEngine(outputs=("classify",), labels=("neg", "pos")),
        splade=FakeEngine(outputs=("sparse",)),
    ) as test_client:
        yield test_client


def test_embed_sparse_answers_the_non_zero_weights_by_token_id(outputs_client) -> None:
    answer = outputs_client.post(
        "/embed_sparse", json={"model": "m3", "inputs": ["a b a", "c"]}
    ).json()
    ids = {w: _id(outputs_client, w) for w in "abc"}
    assert answer == [
        sorted(
            [
                {"index": ids["a"], "value": _f32(fake_weight("a"))},
                {"index": ids["b"], "value": _f32(fake_weight("b"))},
            ],
            key=lambda e: e["index"],
        ),
        [{"index": ids["c"], "value": _f32(fake_weight("c"))}],
    ]


def test_embed_all_answers_a_vector_per_token(outputs_client) -> None:
    answer = outputs_client.post("/embed_all", json={"model": "m3", "inputs": "a b"}).json()
    expected = [[fake_vector(w, 4) for w in ("a", "b", "[SEP]")]]
    np.testing.assert_allclose(answer, expected, rtol=1e-6)


def test_predict_one_text_a_pair_and_a_batch_best_first(outputs_client) -> None:
    single = outputs_client.post("/predict", json={"model": "labels", "inputs": "good"}).json()
    logits = 4.0 * fake_vector("good", 2).astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum()
    expected = sorted(
        [{"score": p, "label": label} for p, label in zip(probs, ("neg", "pos"))],
        key=lambda e: -e["score"],
    )
    assert [e["label"] for e in single] == [e["label"] for e in expected]
    np.testing.assert_allclose([e["score"] for e in single], [e["score"] for e in expected])
    pair = outputs_client.post("/predict", json={"model": "labels", "inputs": ["q", "d"]}).json()
    assert isinstance(pair[0], dict)  # one input: one list
    batch = outputs_client.post(
        "/predict",
        json={"model": "labels", "inputs": [["good"], ["q", "d"]], "raw_scores": True},
    ).json()
    assert len(batch) == 2 and batch[1] != pair  # raw logits, not probabilities
    np.testing.assert_allclose(
        sorted((e["score"] for e in batch[0]), reverse=True), sorted(logits, reverse=True)
    )


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (
            "/predict",
            {"model": "m3", "inputs": "a"},
            "model 'm3' has no classify output; it computes: dense",
        ),
        ("/embed_sparse", {"model": "labels", "inputs": "a"}, "no sparse output"),
        ("/embed_all", {"model": "splade", "inputs": "a"}, "no multivector output"),
        ("/predict", {"model": "labels", "inputs": ["a", "b", "c"]}, "`inputs` must be"),
        ("/predict", {"model": "labels", "inputs": []}, "`inputs` must be"),
    ],
)
def test_a_missing_output_or_bad_inputs_is_teis_validation_error(
    outputs_client, path, body, fragment
) -> None:
    response = outputs_client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"
    assert fragment in response.json()["error"]


def test_embed_all_past_the_token_vector_cap_is_refused() -> None:
    settings = Settings(max_token_vectors=4)
    with serving(settings, m=FakeEngine(outputs=("multivector",))) as client:
        response = client.post("/embed_all", json={"inputs": "a b c"})
        assert response.status_code == 422
        assert "--max-token-vectors" in response.json()["error"]
        assert client.post("/embed_all", json={"inputs": "a b"}).status_code == 200


def test_root_serves_predict_for_a_classifier_and_embed_sparse_for_a_sparse_model() -> None:
    with serving(labels=FakeEngine(outputs=("classify",), labels=("neg", "pos"))) as client:
        assert {e["label"] for e in client.post("/", json={"inputs": "a"}).json()} == {"neg", "pos"}
    with serving(splade=FakeEngine(outputs=("sparse",))) as client:
        assert set(client.post("/", json={"inputs": "a"}).json()[0][0]) == {"index", "value"}


def _id(client, word: str) -> int:
    return client.post(
        "/tokenize", json={"model": "m3", "inputs": word, "add_special_tokens": False}
    ).json()[0][0]["id"]


def _f32(value: float) -> float:
    return float(np.float32(value))
