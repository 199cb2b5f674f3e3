"""Rerank through the real engines, called with the real Cohere SDK (v1 and v2), LangChain and
LlamaIndex `CohereRerank`, and a raw Jina-style POST; scores compared with sentence-transformers
(cosine of reference vectors for the embedding model, `CrossEncoder` for the cross-encoder)."""

from __future__ import annotations

from collections.abc import Iterator

import cohere
import httpx
import numpy as np
import pytest
import torch

from harness.gateway import Gateway
from tests.e2e.conftest import (
    CROSS_ENCODER,
    LLM_RERANKER,
    MINILM,
    MINILM_PROMPTS,
    QWEN3_TEMPLATE,
)

QUERY = "What is the capital of France?"
DOCS = [
    "Bananas are a good source of potassium.",
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany.",
    "The Eiffel Tower was finished in 1889.",
]
PARIS = 1
# About 320 MiniLM tokens of weather talk: past the 256-token window of all-MiniLM-L6-v2.
FILLER = "The forecast says light rain will fall on the hills this afternoon. " * 24


@pytest.fixture(scope="module")
def co(gateway: Gateway) -> Iterator[cohere.ClientV2]:
    with cohere.ClientV2(base_url=gateway.base_url, api_key="unused") as client:
        yield client


@pytest.fixture(scope="module")
def co_v1(gateway: Gateway) -> Iterator[cohere.Client]:
    with cohere.Client(base_url=gateway.base_url, api_key="unused") as client:
        yield client


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_path: str):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(cross_encoder_path, device="cpu")


def reference_cosines(st_minilm, query: str, documents: list[str]) -> np.ndarray:
    """The shared server gives MiniLM query and document prompts; rerank applies them."""
    texts = [MINILM_PROMPTS["query"] + query, *(MINILM_PROMPTS["document"] + d for d in documents)]
    vectors = st_minilm.encode(texts, convert_to_numpy=True).astype(np.float64)
    q, d = vectors[0], vectors[1:]
    return d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))


def by_index(results) -> np.ndarray:
    return np.array([r.relevance_score for r in sorted(results, key=lambda r: r.index)])


def test_embedding_model_scores_are_reference_cosines(co, st_minilm) -> None:
    response = co.rerank(model=MINILM, query=QUERY, documents=DOCS)
    np.testing.assert_allclose(
        by_index(response.results), reference_cosines(st_minilm, QUERY, DOCS), atol=1e-4
    )
    assert response.results[0].index == PARIS
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)


def test_cohere_v2_top_n_on_the_cross_encoder_matches_crossencoder(co, cross_encoder) -> None:
    response = co.rerank(model=CROSS_ENCODER, query=QUERY, documents=DOCS, top_n=3)
    expected = cross_encoder.predict([(QUERY, d) for d in DOCS])  # sigmoid, as CrossEncoder
    assert [r.index for r in response.results] == list(np.argsort(-expected)[:3])
    np.testing.assert_allclose(
        [r.relevance_score for r in response.results], np.sort(expected)[::-1][:3], atol=1e-4
    )
    assert response.meta.billed_units.search_units == 1


def test_raw_logits_match_crossencoder_identity(gateway: Gateway, cross_encoder) -> None:
    body = httpx.post(
        gateway.base_url + "/v1/rerank",
        json={
            "model": CROSS_ENCODER,
            "query": QUERY,
            "documents": DOCS,
            "use_activation": False,
        },
        timeout=60,
    ).json()
    pairs = [(QUERY, d) for d in DOCS]
    expected = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity())
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], expected, atol=1e-4)
    # Raw logits, not the sigmoid scores.
    assert np.abs(expected - cross_encoder.predict(pairs)).min() > 0.01


def test_cross_encoder_usage_counts_pair_tokens(gateway: Gateway, cross_encoder) -> None:
    body = httpx.post(
        gateway.base_url + "/rerank",
        json={"model": CROSS_ENCODER, "query": QUERY, "documents": DOCS},
        timeout=60,
    ).json()
    tokens = sum(len(cross_encoder.tokenizer(QUERY, d)["input_ids"]) for d in DOCS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_llm_reranker_scores_are_yes_minus_no_logits(co, llm_reranker_path: str) -> None:
    """vLLM's Qwen3-Reranker conversion: score = sigmoid(logit("yes") - logit("no")) at the
    last token of the templated prompt; checked against transformers on the same weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llm_reranker_path)
    model = AutoModelForCausalLM.from_pretrained(llm_reranker_path).eval()
    no, yes = tokenizer.convert_tokens_to_ids(["no", "yes"])
    template = QWEN3_TEMPLATE.read_text()
    expected = []
    for document in DOCS:
        prompt = tokenizer.apply_chat_template(
            [{"role": "query", "content": QUERY}, {"role": "document", "content": document}],
            chat_template=template,
            tokenize=False,
        )
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        expected.append(torch.sigmoid(logits[yes] - logits[no]).item())
    response = co.rerank(model=LLM_RERANKER, query=QUERY, documents=DOCS)
    np.testing.assert_allclose(by_index(response.results), expected, atol=1e-4)


def test_cohere_v1_dict_documents_return_documents(co_v1) -> None:
    documents = [{"text": d, "source": f"doc-{i}"} for i, d in enumerate(DOCS)]
    response = co_v1.rerank(
        model=MINILM, query=QUERY, documents=documents, return_documents=True, top_n=2
    )
    assert next(r.index for r in response.results) == PARIS
    assert len(response.results) == 2
    assert response.results[0].document.text == DOCS[PARIS]


def test_cohere_v1_rank_fields(co_v1, st_minilm) -> None:
    documents = [{"title": "Fruit", "body": DOCS[0]}, {"title": "France", "body": DOCS[1]}]
    response = co_v1.rerank(
        model=MINILM,
        query=QUERY,
        documents=documents,
        rank_fields=["title", "body"],
        return_documents=False,
    )
    texts = [f"title: {d['title']}\nbody: {d['body']}" for d in documents]
    np.testing.assert_allclose(
        by_index(response.results), reference_cosines(st_minilm, QUERY, texts), atol=1e-4
    )
    assert response.results[0].document is None


def test_cohere_sdk_with_a_v1_base_url_reaches_v1_v2_rerank(gateway: Gateway) -> None:
    with cohere.ClientV2(base_url=gateway.base_url + "/v1", api_key="unused") as client:
        assert client.rerank(model=MINILM, query=QUERY, documents=DOCS).results[0].index == PARIS


def test_langchain_cohere_rerank(gateway: Gateway, co) -> None:
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    # LangChain builds ClientV2(base_url=...) itself; handing it the module's client only
    # lets the test close the connection (the wire requests are LangChain's own).
    reranker = CohereRerank(
        model=MINILM, base_url=gateway.base_url, cohere_api_key="unused", top_n=2, client=co
    )
    kept = reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    assert next(d.page_content for d in kept) == DOCS[PARIS]
    assert len(kept) == 2 and kept[0].metadata["relevance_score"] > 0.5
    # `rerank` with top_n=None sends "top_n": null and "max_tokens_per_doc": null.
    ranked = reranker.rerank(DOCS, QUERY, top_n=None)
    assert len(ranked) == len(DOCS) and ranked[0]["index"] == PARIS


def test_llamaindex_cohere_rerank(gateway: Gateway) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(model=MINILM, api_key="unused", base_url=gateway.base_url, top_n=1)
    nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCS]
    # The integration offers no close(); its ClientV2 is a context manager that closes.
    with reranker._client:
        kept = reranker.postprocess_nodes(nodes, QueryBundle(QUERY))
    assert [n.node.get_content() for n in kept] == [DOCS[PARIS]]


def test_jina_style_post(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/rerank",
        json={
            "model": MINILM,
            "query": QUERY,
            "documents": DOCS,
            "top_n": 2,
        },
        headers={"Authorization": "Bearer unused"},
        timeout=60,
    )
    assert response.status_code == 200
    body = response.json()
    assert next(r["index"] for r in body["results"]) == PARIS
    assert body["results"][0]["document"] == {"text": DOCS[PARIS]}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0


def test_long_document_relevant_past_first_window_ranks_first(co, st_minilm) -> None:
    long_doc = FILLER + DOCS[PARIS]
    assert len(st_minilm.tokenizer(long_doc)["input_ids"]) > 256
    documents = [DOCS[0], long_doc, DOCS[2]]
    response = co.rerank(model=MINILM, query=QUERY, documents=documents)
    assert response.results[0].index == 1
    filler_only = reference_cosines(st_minilm, QUERY, [FILLER[:300]])[0]
    assert response.results[0].relevance_score > filler_only + 0.2


def test_cross_encoder_chunks_score_the_best_chunk(co, cross_encoder) -> None:
    first, second = DOCS[PARIS], DOCS[0]
    first_tokens = len(cross_encoder.tokenizer(first, add_special_tokens=False)["input_ids"])
    response = co.rerank(
        model=CROSS_ENCODER,
        query=QUERY,
        documents=[f"{first} {second}"],
        max_tokens_per_doc=first_tokens,
    )
    expected = cross_encoder.predict([(QUERY, first), (QUERY, second)]).max()
    assert response.results[0].relevance_score == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "body",
    [
        {"model": MINILM, "query": QUERY, "documents": []},
        {"model": MINILM, "query": "", "documents": DOCS},
        {"model": CROSS_ENCODER, "query": QUERY, "documents": DOCS, "top_n": 0},
    ],
)
def test_errors_are_400_with_envelope_and_detail(gateway: Gateway, body) -> None:
    response = httpx.post(gateway.base_url + "/v2/rerank", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()
    assert error["detail"] == error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


def test_cohere_sdk_raises_bad_request(co) -> None:
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=MINILM, query="", documents=DOCS)


def test_reranker_has_no_embeddings(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/embeddings", json={"model": CROSS_ENCODER, "input": "x"}, timeout=60
    )
    assert response.status_code == 400
    assert "reranker" in response.json()["error"]["message"]
