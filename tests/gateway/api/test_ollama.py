"""Ollama's embedding API over the fake engine: shapes, `:latest` names, errors in Ollama's
`{"error"}` body, the API key as a Bearer token, and the limits every route applies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.base import EmbeddingBatch
from adapters.fake import FakeEngine, fake_vector
from gateway.app import create_app
from gateway.config import InputPolicy, Settings
from gateway.serving.registry import ModelRegistry, ServedModel
from harness.gateway import start_gateway
from tests.conftest import serving, wait_ready


def _unit(vector: Any) -> None:
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_embed_answers_a_unit_vector_per_input_with_durations(client) -> None:
    response = client.post("/api/embed", json={"model": "fake", "input": ["a b", "c"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    }
    assert body["model"] == "fake"
    np.testing.assert_allclose(body["embeddings"][0], fake_vector("a b", 8), atol=1e-6)
    np.testing.assert_allclose(body["embeddings"][1], fake_vector("c", 8), atol=1e-6)
    assert body["prompt_eval_count"] == 4 + 3  # words plus two special tokens each
    assert body["total_duration"] > 0 and body["load_duration"] == 0


def test_embed_takes_a_lone_string_and_accepts_keep_alive_and_options(client) -> None:
    response = client.post(
        "/api/embed",
        json={"model": "fake", "input": "a b", "keep_alive": "5m", "options": {"num_ctx": 8}},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["embeddings"], [fake_vector("a b", 8)], atol=1e-6)


class Unnormalised(FakeEngine):
    """Vectors three times too long, as a model without a normalisation layer answers."""

    async def embed(self, prompts: Any, options: Any = None) -> EmbeddingBatch:
        batch = await super().embed(prompts, options)
        return replace(batch, vectors=batch.vectors * 3)


def test_embed_vectors_are_unit_length_whatever_the_model_answers() -> None:
    with serving(fake=Unnormalised(dimension=8)) as client:
        embedded = client.post("/api/embed", json={"model": "fake", "input": "a"}).json()
        legacy = client.post("/api/embeddings", json={"model": "fake", "prompt": "a"}).json()
    _unit(embedded["embeddings"][0])
    # The older route answers the model's own vector, as Ollama's does.
    assert np.linalg.norm(legacy["embedding"]) == pytest.approx(3.0, abs=1e-4)


def test_dimensions_keeps_the_first_components_renormalised(client) -> None:
    response = client.post("/api/embed", json={"model": "fake", "input": "a", "dimensions": 3})
    vector = response.json()["embeddings"][0]
    full = fake_vector("a", 8)
    np.testing.assert_allclose(vector, full[:3] / np.linalg.norm(full[:3]), atol=1e-6)


def test_dimensions_zero_means_all_of_them(client) -> None:
    response = client.post("/api/embed", json={"model": "fake", "input": "a", "dimensions": 0})
    assert len(response.json()["embeddings"][0]) == 8


def test_empty_input_embeds_nothing(client) -> None:
    for empty in ("", []):
        response = client.post("/api/embed", json={"model": "fake", "input": empty})
        assert response.status_code == 200
        assert response.json()["embeddings"] == []
    legacy = client.post("/api/embeddings", json={"model": "fake", "prompt": ""})
    assert legacy.json() == {"embedding": []}


def test_the_latest_tag_names_the_same_model_on_every_route(client) -> None:
    embedded = client.post("/api/embed", json={"model": "fake:latest", "input": "a"})
    assert embedded.json()["model"] == "fake:latest"
    np.testing.assert_allclose(embedded.json()["embeddings"][0], fake_vector("a", 8), atol=1e-6)
    legacy = client.post("/api/embeddings", json={"model": "fake-alias:latest", "prompt": "a"})
    np.testing.assert_allclose(legacy.json()["embedding"], fake_vector("a", 8), atol=1e-6)
    shown = client.post("/api/show", json={"model": "fake:latest"})
    assert shown.status_code == 200
    assert shown.json()["capabilities"] == ["embedding"]
    assert shown.json()["model_info"]["embedding-gateway.embedding_length"] == 8


def test_show_accepts_the_older_name_field(client) -> None:
    assert client.post("/api/show", json={"name": "fake"}).status_code == 200


def test_tags_list_every_served_name_tagged_latest(client) -> None:
    models = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["fake:latest", "fake-alias:latest"]
    assert [m["model"] for m in models] == ["fake:latest", "fake-alias:latest"]
    assert set(models[0]) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert models[0]["modified_at"].endswith("Z")


def test_ps_lists_the_loaded_models_and_version_answers(client) -> None:
    running = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in running] == ["fake:latest"]
    assert running[0]["context_length"] == 16
    assert client.get("/api/version").json() == {"version": "0.12.0"}


def test_an_unknown_model_is_404_in_ollamas_error_body(client) -> None:
    for path, body in (
        ("/api/embed", {"model": "nope", "input": "a"}),
        ("/api/embeddings", {"model": "nope", "prompt": "a"}),
        ("/api/show", {"model": "nope"}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 404, path
        assert response.json() == {
            "error": "model 'nope' not found; served models: ['fake:latest', 'fake-alias:latest']"
        }


def test_another_tag_is_not_the_same_model(client) -> None:
    response = client.post("/api/embed", json={"model": "fake:v2", "input": "a"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"input": "a"}, "`model` is required"),
        ({"model": "fake", "input": 7}, "`input` must be a string or a list of strings"),
        ({"model": "fake", "input": ["a", 7]}, "`input` must be a string or a list of strings"),
        ({"model": "fake", "input": "a", "truncate": "yes"}, "`truncate` must be a boolean"),
        ({"model": "fake", "input": "a", "dimensions": 9}, "between 1 and the model's dimension"),
        ({"model": "fake", "input": "a\x00"}, "NUL"),
    ],
)
def test_bad_input_is_400_in_ollamas_error_body(client, body, fragment) -> None:
    response = client.post("/api/embed", json=body)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert fragment in response.json()["error"]


def test_an_input_past_the_window_is_cut_unless_truncate_is_false(client) -> None:
    long = " ".join(["w"] * 40)  # 42 tokens, window 16
    cut = client.post("/api/embed", json={"model": "fake", "input": long})
    assert cut.status_code == 200
    assert cut.json()["prompt_eval_count"] == 16
    assert cut.headers["x-truncated-inputs"] == "0"
    refused = client.post("/api/embed", json={"model": "fake", "input": long, "truncate": False})
    assert refused.status_code == 400
    assert "16" in refused.json()["error"]


def test_the_limits_of_every_route_apply(small) -> None:
    too_many = small.post("/api/embed", json={"model": "fake", "input": ["a"] * 5})
    assert too_many.status_code == 400
    assert "at most 4" in too_many.json()["error"]
    tokens = small.post("/api/embed", json={"model": "fake", "input": ["a b c d e f g h i"]})
    assert tokens.status_code == 400
    assert "10" in tokens.json()["error"]
    large = small.post("/api/embed", json={"model": "fake", "input": "a" * 2000})
    assert large.status_code == 413
    assert list(large.json()) == ["error"]


def test_characters_are_bounded_before_tokenizing() -> None:
    with serving(Settings(max_request_chars=10)) as client:
        response = client.post("/api/embed", json={"model": "fake", "input": ["abcdef", "ghijk"]})
    assert response.status_code == 400
    assert "--max-request-chars" in response.json()["error"]


def test_the_api_key_is_taken_as_a_bearer_token() -> None:
    with serving(Settings(api_keys=("sekret",))) as client:
        missing = client.post("/api/embed", json={"model": "fake", "input": "a"})
        wrong = client.get("/api/tags", headers={"Authorization": "Bearer nope"})
        right = client.post(
            "/api/embed",
            json={"model": "fake", "input": "a"},
            headers={"Authorization": "Bearer sekret"},
        )
    assert missing.status_code == 401 and list(missing.json()) == ["error"]
    assert wrong.status_code == 401 and "incorrect API key" in wrong.json()["error"]
    assert right.status_code == 200


def test_an_unknown_api_path_answers_in_ollamas_body(client) -> None:
    response = client.post("/api/generate", json={"model": "fake", "prompt": "a"})
    assert response.status_code == 404
    assert list(response.json()) == ["error"]


@pytest.mark.process
def test_ollamas_clients_send_the_key_as_a_bearer_token_header(tmp_path) -> None:
    import ollama
    from langchain_ollama import OllamaEmbeddings
    from llama_index.embeddings.ollama import OllamaEmbedding

    gateway = start_gateway(tmp_path, fake_models={"fake": {}}, args=["--api-key", "k"])
    url, headers = gateway.base_url, {"Authorization": "Bearer k"}
    try:
        with ollama.Client(host=url) as keyless, pytest.raises(ollama.ResponseError) as refused:
            keyless.embed(model="fake", input="a")
        assert refused.value.status_code == 401
        with ollama.Client(host=url, headers=headers) as client:
            assert len(client.embed(model="fake:latest", input=["a", "b"]).embeddings) == 2
        langchain = OllamaEmbeddings(
            model="fake",
            base_url=url,
            validate_model_on_init=True,
            client_kwargs={"headers": headers},
        )
        with langchain._client:
            vector = langchain.embed_query("a")
        np.testing.assert_allclose(vector, fake_vector("a", 384), atol=1e-6)
        llamaindex = OllamaEmbedding(
            model_name="fake", base_url=url, client_kwargs={"headers": headers}
        )
        with llamaindex._client:
            vector = llamaindex.get_text_embedding("a")
        np.testing.assert_allclose(vector, fake_vector("a", 384), atol=1e-6)
    finally:
        gateway.stop()


def test_a_virtual_name_applies_its_prompt_with_or_without_the_tag() -> None:
    registry = ModelRegistry(
        [
            ServedModel(
                "fake",
                (),
                FakeEngine(dimension=8),
                InputPolicy(prompts={"query": "q: "}, prompt_aliases={"fake-query": "query"}),
            )
        ]
    )
    with TestClient(create_app(registry), raise_server_exceptions=False) as client:
        wait_ready(client)
        for name in ("fake-query", "fake-query:latest"):
            response = client.post("/api/embed", json={"model": name, "input": "a"})
            vector = response.json()["embeddings"][0]
            np.testing.assert_allclose(vector, fake_vector("q: a", 8), atol=1e-6)
