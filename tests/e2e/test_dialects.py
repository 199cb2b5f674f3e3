"""Other servers' clients, unchanged, against the real engine: the texts API's
`POST /embed`, Hugging Face `InferenceClient` and LlamaIndex `TextEmbeddingsInference` (TEI),
TEI's and vLLM's rerank/score, tokenize and decode routes as documented, and openai
`models.retrieve`; vectors and scores compared with sentence-transformers."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from harness.gateway import Gateway
from tests.e2e.conftest import CROSS_ENCODER, MINILM, MINILM_PROMPTS

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France."]
QUERY = "What is the capital of France?"


@pytest.fixture
def hub(gateway: Gateway, monkeypatch):
    # HF_HUB_OFFLINE=1 (set for the whole suite) makes huggingface_hub refuse every URL, the
    # local server's too; the client is let through for these calls only.
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return InferenceClient(model=gateway.base_url)


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_path: str):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(cross_encoder_path, device="cpu")


def test_seed_embed_unchanged_client(gateway, st_minilm) -> None:
    response = httpx.post(gateway.base_url + "/embed", json={"texts": TEXTS}, timeout=60)
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["embeddings"], st_minilm.encode(TEXTS), atol=1e-5)


def test_inference_client_feature_extraction(hub, st_minilm) -> None:
    vector = hub.feature_extraction(TEXTS[0])
    np.testing.assert_allclose(vector, st_minilm.encode([TEXTS[0]]), atol=1e-5)
    query = hub.feature_extraction(QUERY, prompt_name="query")
    np.testing.assert_allclose(
        query, st_minilm.encode([MINILM_PROMPTS["query"] + QUERY]), atol=1e-5
    )


def test_normalize_false_is_the_pooled_vector(hub, st_minilm) -> None:
    from sentence_transformers import SentenceTransformer

    pooled = SentenceTransformer(modules=[st_minilm[0], st_minilm[1]], device="cpu")
    vector = hub.feature_extraction(TEXTS[1], normalize=False)
    expected = pooled.encode([TEXTS[1]])
    assert abs(np.linalg.norm(expected) - 1) > 0.01  # the check means something
    np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-5)


def test_inference_client_sentence_similarity(hub, st_minilm) -> None:
    scores = hub.sentence_similarity(QUERY, other_sentences=TEXTS)
    vectors = st_minilm.encode([QUERY, *TEXTS])
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)


def test_llamaindex_text_embeddings_inference(gateway, st_minilm) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embedder = TextEmbeddingsInference(model_name=MINILM, base_url=gateway.base_url)
    np.testing.assert_allclose(
        embedder.get_text_embedding_batch(TEXTS), st_minilm.encode(TEXTS), atol=1e-5
    )


def test_tei_rerank_and_vllm_score_match_crossencoder(gateway, cross_encoder) -> None:
    expected = cross_encoder.predict([(QUERY, t) for t in TEXTS])  # sigmoid
    ranks = httpx.post(
        gateway.base_url + "/rerank",
        timeout=60,
        json={"model": CROSS_ENCODER, "query": QUERY, "texts": TEXTS, "return_text": True},
    ).json()
    assert [r["index"] for r in ranks] == list(np.argsort(-expected))
    assert ranks[0]["text"] == TEXTS[ranks[0]["index"]]
    np.testing.assert_allclose(
        [r["score"] for r in sorted(ranks, key=lambda r: r["index"])], expected, atol=1e-4
    )
    score = httpx.post(
        gateway.base_url + "/score",
        timeout=60,
        json={"model": CROSS_ENCODER, "text_1": QUERY, "text_2": TEXTS},
    ).json()
    np.testing.assert_allclose([d["score"] for d in score["data"]], expected, atol=1e-4)


def test_tokenize_and_decode_match_the_tokenizer(gateway, minilm_path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    ids = tokenizer(TEXTS[1])["input_ids"]
    tei = httpx.post(gateway.base_url + "/tokenize", json={"inputs": TEXTS[1]}).json()
    assert [t["id"] for t in tei[0]] == ids
    assert tei[0][1]["text"] == TEXTS[1][tei[0][1]["start"] : tei[0][1]["stop"]]
    vllm = httpx.post(
        gateway.base_url + "/tokenize", json={"prompt": TEXTS[1], "return_token_strs": True}
    ).json()
    assert vllm["tokens"] == ids and vllm["count"] == len(ids)
    assert vllm["token_strs"] == tokenizer.convert_ids_to_tokens(ids)
    decoded = httpx.post(gateway.base_url + "/decode", json={"ids": ids}).json()
    assert decoded == [tokenizer.decode(ids, skip_special_tokens=True)]
    prompt = httpx.post(gateway.base_url + "/detokenize", json={"tokens": ids}).json()
    assert prompt == {"prompt": tokenizer.decode(ids)}


def test_openai_models_retrieve_and_tei_info(gateway) -> None:
    import openai

    client = openai.OpenAI(base_url=gateway.openai_base_url, api_key="unused")
    assert client.models.retrieve(MINILM).id == MINILM
    alias = client.models.retrieve("sentence-transformers/all-MiniLM-L6-v2")
    assert alias.model_extra["root"] == MINILM
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    info = httpx.get(gateway.base_url + "/info").json()
    assert (info["model_id"], info["dimension"], info["max_input_length"]) == (MINILM, 384, 256)


def test_token_vectors_of_a_plain_encoder_are_its_last_hidden_states(gateway, minilm_path):
    """TEI's `/embed_all` and vLLM's `token_embed` on an encoder without a ColBERT head: the
    last hidden states as they are, every token's."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    every = httpx.post(gateway.base_url + "/embed_all", json={"inputs": TEXTS}, timeout=60)
    pooled = httpx.post(
        gateway.base_url + "/pooling",
        json={"model": MINILM, "input": TEXTS, "task": "token_embed"},
        timeout=60,
    )
    assert every.status_code == pooled.status_code == 200, (every.text, pooled.text)
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].numpy()
        np.testing.assert_allclose(every.json()[i], hidden, rtol=0, atol=1e-5)
        np.testing.assert_allclose(pooled.json()["data"][i]["data"], hidden, rtol=0, atol=1e-5)


def test_outputs_the_model_lacks_are_refused_naming_what_it_computes(gateway) -> None:
    # The real engine states what the model computes (a dense embedder, whose token states
    # are its token vectors): every route that asks for another output says so before any
    # work.
    lacks = [
        ("/embed_sparse", {"inputs": "a"}, 422, "error"),
        ("/pooling", {"input": "a", "task": "classify"}, 400, "message"),
        ("/classify", {"input": "a"}, 400, "message"),
        ("/v1/embeddings", {"model": MINILM, "input": "a", "return_sparse": True}, 400, "message"),
    ]
    for path, body, status, key in lacks:
        response = httpx.post(gateway.base_url + path, json=body, timeout=60)
        assert response.status_code == status, (path, response.text)
        answer = response.json()
        message = answer[key] if key == "error" else answer["error"]["message"]
        assert "it computes: dense, multivector" in message, (path, message)
