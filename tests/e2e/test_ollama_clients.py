"""Ollama's clients unchanged against the real engine: the `ollama` Python client, LangChain
`OllamaEmbeddings` (validating the model on init) and LlamaIndex `OllamaEmbedding`; every
vector compared with sentence-transformers'."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import ollama
import pytest

from harness.gateway import Gateway
from tests.e2e.conftest import MINILM
from tests.e2e.test_embeddings_openai import cosine_rows

TEXTS = [
    "The capital of France is Paris.",
    "你好, Ünïcödé and emoji 🚀",
    "Embeddings map text to vectors; similar meanings land close together.",
]


@pytest.fixture
def client(gateway: Gateway) -> Iterator[ollama.Client]:
    with ollama.Client(host=gateway.base_url, timeout=120) as opened:
        yield opened


def test_ollama_embed_equals_sentence_transformers(client, st_minilm) -> None:
    response = client.embed(model=MINILM, input=TEXTS)
    vectors = np.array(response.embeddings)
    assert cosine_rows(vectors, st_minilm.encode(TEXTS)).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert response.model == MINILM
    tokens = sum(len(ids) for ids in st_minilm.tokenizer(TEXTS)["input_ids"])
    assert response.prompt_eval_count == tokens
    assert response.total_duration > 0


def test_ollama_latest_tag_and_dimensions_truncate_and_renormalise(client, st_minilm) -> None:
    response = client.embed(model=MINILM + ":latest", input=TEXTS[0], dimensions=64)
    (vector,) = np.array(response.embeddings)
    expected = st_minilm.encode(TEXTS[:1])[:, :64]
    assert vector.shape == (64,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert cosine_rows(vector[None], expected)[0] >= 0.9999


def test_ollama_older_embeddings_route(client, st_minilm) -> None:
    vector = np.array(client.embeddings(model=MINILM, prompt=TEXTS[2]).embedding)
    assert cosine_rows(vector[None], st_minilm.encode(TEXTS[2:]))[0] >= 0.9999


def test_ollama_list_show_ps_and_errors(client) -> None:
    names = [m.model for m in client.list().models]
    assert MINILM + ":latest" in names
    shown = client.show(MINILM + ":latest")
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo["embedding-gateway.embedding_length"] == 384
    assert MINILM + ":latest" in [m.model for m in client.ps().models]
    with pytest.raises(ollama.ResponseError) as missing:
        client.embed(model="not-served", input="a")
    assert missing.value.status_code == 404 and "not-served" in missing.value.error
    long = "word " * 2000
    assert len(client.embed(model=MINILM, input=long).embeddings[0]) == 384
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model=MINILM, input=long, truncate=False)
    assert refused.value.status_code == 400


def test_langchain_ollama_embeddings_equal_sentence_transformers(gateway, st_minilm) -> None:
    from langchain_ollama import OllamaEmbeddings

    embeddings = OllamaEmbeddings(
        model=MINILM, base_url=gateway.base_url, validate_model_on_init=True
    )
    with embeddings._client:  # closes its connections after the test
        documents = np.array(embeddings.embed_documents(TEXTS))
        query = np.array(embeddings.embed_query(TEXTS[0]))
    reference = st_minilm.encode(TEXTS)
    assert cosine_rows(documents, reference).min() >= 0.9999
    assert cosine_rows(query[None], reference[:1])[0] >= 0.9999
    short = OllamaEmbeddings(model=MINILM, base_url=gateway.base_url, dimensions=32)
    with short._client:
        cut = np.array(short.embed_query(TEXTS[1]))
    assert cut.shape == (32,) and abs(np.linalg.norm(cut) - 1) < 1e-5
    assert cosine_rows(cut[None], reference[1:2, :32])[0] >= 0.9999


def test_langchain_validation_refuses_a_model_not_served(gateway) -> None:
    from langchain_ollama import OllamaEmbeddings

    # The client fails in its constructor: its connections are closed through the transport.
    with httpx.HTTPTransport() as transport, pytest.raises(ValueError, match="not found"):
        OllamaEmbeddings(
            model="not-served",
            base_url=gateway.base_url,
            validate_model_on_init=True,
            sync_client_kwargs={"transport": transport},
        )


def test_llamaindex_ollama_embedding_equals_sentence_transformers(gateway, st_minilm) -> None:
    from llama_index.embeddings.ollama import OllamaEmbedding

    embedding = OllamaEmbedding(model_name=MINILM, base_url=gateway.base_url)
    with embedding._client:
        documents = np.array(embedding.get_text_embedding_batch(TEXTS))
        query = np.array(embedding.get_query_embedding(TEXTS[2]))
    reference = st_minilm.encode(TEXTS)
    assert cosine_rows(documents, reference).min() >= 0.9999
    assert cosine_rows(query[None], reference[2:])[0] >= 0.9999
