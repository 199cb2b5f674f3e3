"""The texts API (`POST /embed` with `texts`) over the fake engine: its answer, its error body
with `detail`, and the default model that answers a body without `model`."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine, fake_vector
from gateway.app import create_app
from gateway.config import InputPolicy, Settings
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import make_client, serving, wait_ready


@pytest.fixture
def client():
    engine = FakeEngine(dimension=8, max_model_len=16)
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


def test_several_embedding_models_without_a_default_is_a_400_listing_them() -> None:
    with serving(one=FakeEngine(), two=FakeEngine()) as client:
        response = client.post("/embed", json={"texts": ["a"]})
        assert response.status_code == 400
        assert "['one', 'two']" in response.json()["error"]["message"]
        assert client.post("/embed", json={"texts": ["a"], "model": "two"}).status_code == 200


def test_the_model_marked_default_answers() -> None:
    one, two = FakeEngine(), FakeEngine()
    registry = ModelRegistry(
        [ServedModel("one", (), one), ServedModel("two", (), two, default=True)]
    )
    with TestClient(create_app(registry, Settings())) as client:
        wait_ready(client)
        assert client.post("/embed", json={"texts": ["a"]}).status_code == 200
        assert two.calls and not one.calls
