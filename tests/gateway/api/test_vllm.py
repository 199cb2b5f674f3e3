"""vLLM's routes over the fake engine: /score (and /v1/score), /pooling, /classify, /tokenize
with `prompt`, /detokenize."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_logit, fake_vector
from gateway.config import InputPolicy, Settings
from tests.conftest import make_client, serving, wait_ready


@pytest.fixture
def client():
    engine = FakeEngine(dimension=8, max_model_len=16)
    with make_client(engine, InputPolicy(prompts={"query": "q: "})) as test_client:
        wait_ready(test_client)
        yield test_client


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


# -- /pooling and /classify -------------------------------------------------------------------


@pytest.fixture
def pooled():
    with serving(
        m3=FakeEngine(dimension=4, max_model_len=16, outputs=("dense", "sparse", "multivector")),
        labels=FakeEngine(outputs=("classify",), labels=("neg", "pos")),
    ) as test_client:
        yield test_client


def pooling(client, **body):
    response = client.post("/pooling", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "list" and answer["id"].startswith("pool-")
    assert [(d["index"], d["object"]) for d in answer["data"]] == [
        (i, "pooling") for i in range(len(answer["data"]))
    ]
    return answer


def test_pooling_embed_and_token_embed(pooled) -> None:
    embed = pooling(pooled, model="m3", input=["a b", "c"], task="embed")
    np.testing.assert_allclose(
        [d["data"] for d in embed["data"]], [fake_vector("a b", 4), fake_vector("c", 4)], rtol=1e-6
    )
    assert embed["usage"] == {"prompt_tokens": 7, "total_tokens": 7, "completion_tokens": 0}
    tokens = pooling(pooled, model="m3", input="a b", task="token_embed")
    np.testing.assert_allclose(
        tokens["data"][0]["data"], [fake_vector(w, 4) for w in ("a", "b", "[SEP]")], rtol=1e-6
    )
    # No task: the model's first of embed, classify, token_embed.
    default = pooling(pooled, model="m3", input="a")["data"][0]["data"]
    assert default == pooling(pooled, model="m3", input="a", task="embed")["data"][0]["data"]


def test_pooling_base64_is_the_float32_bytes_row_major(pooled) -> None:
    answer = pooling(pooled, model="m3", input="a b", task="token_embed", encoding_format="base64")
    rows = np.frombuffer(base64.b64decode(answer["data"][0]["data"]), dtype="<f4").reshape(-1, 4)
    expected = [fake_vector(w, 4) for w in ("a", "b", "[SEP]")]
    np.testing.assert_allclose(rows, expected, rtol=1e-6)


def test_pooling_classify_and_the_default_task_of_a_classifier(pooled) -> None:
    probs = pooling(pooled, model="labels", input="good", task="classify")["data"][0]["data"]
    logits = 4.0 * fake_vector("good", 2).astype(np.float64)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    default = pooling(pooled, model="labels", input="good")["data"][0]["data"]
    assert default == probs
    raw = pooling(pooled, model="labels", input="good", use_activation=False)["data"][0]["data"]
    np.testing.assert_allclose(raw, logits, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "labels", "task": "embed"}, "model 'labels' has no dense output"),
        (
            {"model": "labels", "task": "token_embed"},
            "no multivector output; it computes: classify",
        ),
        ({"model": "m3", "task": "classify"}, "no classify output"),
        ({"model": "m3", "task": "token_classify"}, "/embed_sparse"),
        ({"model": "m3", "task": "encode"}, "`task` must be one of"),
    ],
)
def test_pooling_refuses_a_task_the_model_cannot_do(pooled, body, fragment) -> None:
    response = pooled.post("/pooling", json={**body, "input": "a"})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_pooling_token_embed_past_the_cap_is_refused_naming_it() -> None:
    with serving(Settings(max_token_vectors=3), m=FakeEngine(outputs=("multivector",))) as client:
        response = client.post("/pooling", json={"input": ["a", "b c"], "task": "token_embed"})
        assert response.status_code == 400
        assert "--max-token-vectors" in response.json()["error"]["message"]


def test_classify_answers_vllms_shape(pooled) -> None:
    response = pooled.post("/classify", json={"model": "labels", "input": ["good", "bad"]})
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"].startswith("classify-") and answer["model"] == "labels"
    for item, text in zip(answer["data"], ["good", "bad"]):
        logits = 4.0 * fake_vector(text, 2).astype(np.float64)
        expected = np.exp(logits) / np.exp(logits).sum()
        assert item["index"] == ["good", "bad"].index(text) and item["num_classes"] == 2
        assert item["label"] == ("neg", "pos")[int(np.argmax(expected))]
        np.testing.assert_allclose(item["probs"], expected, rtol=1e-6)
    assert answer["usage"] == {"prompt_tokens": 6, "total_tokens": 6, "completion_tokens": 0}
    refused = pooled.post("/classify", json={"model": "m3", "input": "a"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "model 'm3' has no classify output; it computes: dense, sparse, multivector"
    )
