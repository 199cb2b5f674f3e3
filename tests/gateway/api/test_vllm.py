"""vLLM's routes over the fake engine: /score (and /v1/score), /tokenize with `prompt`,
/detokenize."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_logit
from gateway.config import InputPolicy
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
