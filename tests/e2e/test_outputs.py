"""Sparse vectors, token vectors, label scores and hybrid rerank through one real gateway and
its vLLM engines, over tiny seeded models (harness/models.py), on every route that serves
them, each compared with the model's own reference library: FlagEmbedding's BGEM3FlagModel
(bge-m3), sentence-transformers' SparseEncoder (SPLADE), transformers'
AutoModelForSequenceClassification (a classifier) and colbert-ai's HF_ColBERT computation.
The README's hybrid-search example runs here too, unchanged but for its base URL."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from harness import models
from harness.gateway import Gateway, start_gateway
from harness.paths import REPO
from tests.conftest import TIKTOKEN_DIR
from tests.e2e.conftest import START_TIMEOUT_S

BGE_M3, SPLADE, COLBERT = "bge-m3", "splade", "colbert"
CLASSIFIER, MULTI_LABEL = "sentiment", "multi-label"
# Tiny models: a small memory share each, and no graph capture or compilation at start.
TINY = {
    "gpu_memory_utilization": 0.05,
    "max_model_len": 128,
    "engine_kwargs": {"enforce_eager": True},
}
TEXTS = ["the cat sat on the mat", "the the the cat", "hybrid retrieval, dense and sparse"]
QUERY = "where did the cat sit?"
DOCS = ["the cat sat on the mat", "dogs chase cats in the park", "sparse and dense retrieval"]
# FlagEmbedding's weights for dense, sparse and colbert scores in its examples.
WEIGHTS = [0.4, 0.2, 0.4]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("output-models")
    return {
        BGE_M3: models.build_bge_m3(root),
        SPLADE: models.build_splade(root),
        CLASSIFIER: models.build_classifier(root),
        MULTI_LABEL: models.build_classifier(root, multi_label=True),
        COLBERT: models.build_colbert(root),
    }


@pytest.fixture(scope="module")
def server(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # TEI's `POST /` (huggingface_hub's InferenceClient) names no model: the default answers.
    served: list[dict[str, Any]] = [
        {"name": name, "path": str(path), **TINY, "default": name == CLASSIFIER}
        for name, path in folders.items()
    ]
    gateway = start_gateway(
        tmp_path_factory.mktemp("outputs-gateway"),
        models=served,
        config={"tiktoken_cache_dir": TIKTOKEN_DIR},
        ready_timeout=START_TIMEOUT_S,
    )
    try:
        yield gateway
    finally:
        gateway.stop(timeout=60)


def post(server: Gateway, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = httpx.post(server.base_url + path, json=body, timeout=120)
    assert response.status_code == status, response.text
    return response.json()


def token_count(folder: Path, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return sum(len(ids) for ids in tokenizer(texts)["input_ids"])


# -- bge-m3: FlagEmbedding's BGEM3FlagModel ---------------------------------------------------


@pytest.fixture(scope="module")
def flag_model(folders: dict[str, Path]):
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(folders[BGE_M3]), use_fp16=False, devices="cpu")


@pytest.fixture(scope="module")
def flag(flag_model) -> dict[str, Any]:
    return flag_model.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)


def lexical(weights: dict[str, float]) -> dict[str, list]:
    """FlagEmbedding's lexical weights ({"token id": weight}) as ids ascending and values."""
    ids = sorted(int(k) for k in weights)
    return {"indices": ids, "values": [float(weights[str(i)]) for i in ids]}


def assert_sparse_equal(answer: dict[str, list], expected: dict[str, list]) -> None:
    assert answer["indices"] == expected["indices"]
    np.testing.assert_allclose(answer["values"], expected["values"], rtol=0, atol=1e-5)


def test_bge_m3_outputs_through_the_openai_client_equal_flag_embedding(server, flag, folders):
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="unused", max_retries=0)
    extra = {"return_sparse": True, "return_colbert_vecs": True}
    # The client asks for base64 unless told otherwise: both encodings of `embedding`.
    for encoding in ("float", openai.NOT_GIVEN):
        result = client.embeddings.create(
            model=BGE_M3, input=TEXTS, encoding_format=encoding, extra_body=extra
        )
        for i, item in enumerate(result.data):
            np.testing.assert_allclose(item.embedding, flag["dense_vecs"][i], rtol=0, atol=1e-5)
            assert_sparse_equal(
                item.model_extra["sparse_embedding"], lexical(flag["lexical_weights"][i])
            )
            np.testing.assert_allclose(
                item.model_extra["colbert_vecs"], flag["colbert_vecs"][i], rtol=0, atol=1e-5
            )
        # Tokens count once, not once per output.
        tokens = token_count(folders[BGE_M3], TEXTS)
        assert (result.usage.prompt_tokens, result.usage.total_tokens) == (tokens, tokens)


def test_bge_m3_outputs_as_plain_json_equal_flag_embedding(server, flag) -> None:
    body = {"model": BGE_M3, "input": TEXTS, "return_sparse": True, "return_colbert_vecs": True}
    answer = post(server, "/v1/embeddings", body)
    for i, item in enumerate(answer["data"]):
        assert set(item) == {"object", "index", "embedding", "sparse_embedding", "colbert_vecs"}
        np.testing.assert_allclose(item["embedding"], flag["dense_vecs"][i], rtol=0, atol=1e-5)
        assert_sparse_equal(item["sparse_embedding"], lexical(flag["lexical_weights"][i]))
        np.testing.assert_allclose(item["colbert_vecs"], flag["colbert_vecs"][i], atol=1e-5)
    dense_only = post(server, "/v1/embeddings", {"model": BGE_M3, "input": TEXTS})
    assert answer["usage"] == dense_only["usage"]
    # cl100k_base token ids in (as OpenAI clients send them), the text's weights out.
    import tiktoken

    ids = tiktoken.get_encoding("cl100k_base").encode(TEXTS[0])
    by_ids = post(server, "/v1/embeddings", {**body, "input": [ids]})["data"][0]
    assert by_ids["sparse_embedding"] == answer["data"][0]["sparse_embedding"]
    without_dense = post(
        server, "/v1/embeddings", {**body, "return_dense": False, "return_colbert_vecs": False}
    )
    assert without_dense["data"][0]["embedding"] is None


def test_bge_m3_on_tei_and_vllm_routes_equals_flag_embedding(server, flag) -> None:
    sparse = post(server, "/embed_sparse", {"model": BGE_M3, "inputs": TEXTS})
    for i, entries in enumerate(sparse):
        assert_sparse_equal(
            {"indices": [e["index"] for e in entries], "values": [e["value"] for e in entries]},
            lexical(flag["lexical_weights"][i]),
        )
    every = post(server, "/embed_all", {"model": BGE_M3, "inputs": TEXTS})
    pooled = post(server, "/pooling", {"model": BGE_M3, "input": TEXTS, "task": "token_embed"})
    for i, expected in enumerate(flag["colbert_vecs"]):
        np.testing.assert_allclose(every[i], expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(pooled["data"][i]["data"], expected, rtol=0, atol=1e-5)
    # vLLM's truncate_prompt_tokens: 10 tokens, the first of which has no vector.
    cut = post(
        server,
        "/pooling",
        {
            "model": BGE_M3,
            "input": "word " * 50,
            "task": "token_embed",
            "truncate_prompt_tokens": 10,
        },
    )
    assert np.array(cut["data"][0]["data"]).shape == (9, models.BGE_M3_HIDDEN)
    assert cut["usage"]["prompt_tokens"] == 10
    # Without activation: the rows before their normalisation.
    raw = post(
        server,
        "/pooling",
        {"model": BGE_M3, "input": TEXTS[:1], "task": "token_embed", "use_activation": False},
    )
    rows = np.array(raw["data"][0]["data"])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(rows / norms, flag["colbert_vecs"][0], rtol=0, atol=1e-5)


def rerank_scores(server: Gateway, model: str, **fields: Any) -> tuple[np.ndarray, dict]:
    body = {"model": model, "query": QUERY, "documents": DOCS, **fields}
    answer = post(server, "/v1/rerank", body)
    results = sorted(answer["results"], key=lambda r: r["index"])
    return np.array([r["relevance_score"] for r in results]), answer["usage"]


def test_bge_m3_rerank_modes_equal_flag_embeddings_compute_score(
    server, flag_model, folders
) -> None:
    pairs = [(QUERY, doc) for doc in DOCS]
    expected = flag_model.compute_score(pairs, weights_for_different_modes=WEIGHTS)
    usages = []
    for mode, key in [
        ("dense", "dense"),
        ("sparse", "sparse"),
        ("colbert", "colbert"),
        ("hybrid", "colbert+sparse+dense"),
    ]:
        scores, usage = rerank_scores(server, BGE_M3, mode=mode, return_documents=False)
        np.testing.assert_allclose(scores, expected[key], rtol=0, atol=1e-5, err_msg=mode)
        usages.append(usage)
    # No mode: hybrid with FlagEmbedding's weights.
    default, _ = rerank_scores(server, BGE_M3)
    np.testing.assert_allclose(default, expected["colbert+sparse+dense"], atol=1e-5)
    custom = [0.5, 0.3, 0.2]
    weighted = flag_model.compute_score(pairs, weights_for_different_modes=custom)
    scores, _ = rerank_scores(server, BGE_M3, mode="hybrid", weights=custom)
    np.testing.assert_allclose(scores, weighted["colbert+sparse+dense"], rtol=0, atol=1e-5)
    # The query's and each document's tokens count once, whatever the mode.
    tokens = token_count(folders[BGE_M3], [QUERY, *DOCS])
    assert usages == [{"prompt_tokens": tokens, "total_tokens": tokens}] * 4


# -- SPLADE: sentence-transformers' SparseEncoder ---------------------------------------------


@pytest.fixture(scope="module")
def splade_reference(folders: dict[str, Path]) -> list[dict[str, list]]:
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(str(folders[SPLADE]), device="cpu")
    dense = encoder.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    return [
        {"indices": np.flatnonzero(row).tolist(), "values": row[np.flatnonzero(row)].tolist()}
        for row in dense
    ]


def test_splade_sparse_vectors_equal_sentence_transformers(server, splade_reference) -> None:
    tei = post(server, "/embed_sparse", {"model": SPLADE, "inputs": TEXTS})
    body = {"model": SPLADE, "input": TEXTS, "return_dense": False, "return_sparse": True}
    openai_shape = post(server, "/v1/embeddings", body)
    for i, expected in enumerate(splade_reference):
        assert 0 < len(expected["indices"]) < 1000
        assert_sparse_equal(
            {"indices": [e["index"] for e in tei[i]], "values": [e["value"] for e in tei[i]]},
            expected,
        )
        item = openai_shape["data"][i]
        assert item["embedding"] is None
        assert_sparse_equal(item["sparse_embedding"], expected)


def test_splade_truncates_as_embeddings_do(server) -> None:
    long = "word " * 300
    body = {"model": SPLADE, "input": [long], "return_dense": False, "return_sparse": True}
    refused = post(server, "/v1/embeddings", body, status=400)
    assert "at most 128 tokens" in refused["error"]["message"]
    cut = post(server, "/v1/embeddings", {**body, "truncate_prompt_tokens": 16})
    assert cut["usage"]["prompt_tokens"] == 16 and cut["data"][0]["sparse_embedding"]["indices"]


# -- a classifier: transformers' AutoModelForSequenceClassification ---------------------------

INPUTS: list[str | tuple[str, str]] = [
    "what a lovely day",
    ("is it raining?", "the sun is out all day"),
    "meh",
]


def transformers_logits(folder: Path) -> np.ndarray:
    """transformers' logits of INPUTS, one at a time (a pair as text, text_pair)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert tuple(model.config.id2label[i] for i in range(3)) == models.SENTIMENT_LABELS
    rows = []
    with torch.no_grad():
        for item in INPUTS:
            encoded = tokenizer(*((item,) if isinstance(item, str) else item), return_tensors="pt")
            rows.append(model(**encoded).logits[0].numpy())
    return np.array(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def logits(folders: dict[str, Path]) -> np.ndarray:
    return transformers_logits(folders[CLASSIFIER])


def softmax(rows: np.ndarray) -> np.ndarray:
    return np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True)


def best_first(row: np.ndarray) -> list[tuple[str, float]]:
    order = np.argsort(-row)
    return [(models.SENTIMENT_LABELS[j], float(row[j])) for j in order]


def assert_predictions(answer: list[dict], row: np.ndarray) -> None:
    expected = best_first(row)
    assert [p["label"] for p in answer] == [label for label, _ in expected]
    np.testing.assert_allclose([p["score"] for p in answer], [s for _, s in expected], atol=1e-5)


def tei_input(item: str | tuple[str, str]) -> list[str]:
    return [item] if isinstance(item, str) else list(item)


def test_predict_equals_transformers(server, logits) -> None:
    probs = softmax(logits)
    single = post(server, "/predict", {"model": CLASSIFIER, "inputs": INPUTS[0]})
    assert_predictions(single, probs[0])
    pair = post(server, "/predict", {"model": CLASSIFIER, "inputs": list(INPUTS[1])})
    assert_predictions(pair, probs[1])
    batch = post(server, "/predict", {"inputs": [tei_input(i) for i in INPUTS]})
    raw = post(server, "/predict", {"inputs": [tei_input(i) for i in INPUTS], "raw_scores": True})
    for i in range(len(INPUTS)):
        assert_predictions(batch[i], probs[i])
        assert_predictions(raw[i], logits[i])
    # The pair was read as a pair: its segment ids matter to BERT.
    joined = post(server, "/predict", {"inputs": " ".join(INPUTS[1])})
    assert not np.isclose(joined[0]["score"], pair[0]["score"], atol=1e-3)


def test_a_multi_label_classifier_scores_each_label_by_its_sigmoid(server, folders) -> None:
    logits = transformers_logits(folders[MULTI_LABEL])
    body = {"model": MULTI_LABEL, "inputs": [tei_input(i) for i in INPUTS]}
    for answer, row in zip(post(server, "/predict", body), logits):
        assert_predictions(answer, 1 / (1 + np.exp(-row)))


def test_vllm_classify_equals_transformers(server, logits) -> None:
    texts = [INPUTS[0], INPUTS[2]]
    answer = post(server, "/classify", {"model": CLASSIFIER, "input": texts})
    expected = softmax(logits[[0, 2]])
    for item, row in zip(answer["data"], expected):
        assert item["num_classes"] == 3
        assert item["label"] == models.SENTIMENT_LABELS[int(np.argmax(row))]
        np.testing.assert_allclose(item["probs"], row, rtol=0, atol=1e-5)


def test_inference_client_text_classification(server, logits, monkeypatch) -> None:
    """huggingface_hub posts `{"inputs", "parameters"}` to the base URL itself (`POST /`),
    which answers as `/predict` for a classifier; the client reads the best label of TEI's
    one-input answer."""
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    # HF_HUB_OFFLINE=1 (the suite's) refuses every URL, the local server's too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    result = InferenceClient(base_url=server.base_url).text_classification(INPUTS[0])
    label, score = best_first(softmax(logits)[0])[0]
    assert result.label == label
    assert abs(result.score - score) < 1e-5


def test_pairs_truncate_from_the_longer_part_on_request(server) -> None:
    pair = ["short question", "a long document " * 60]
    refused = post(server, "/predict", {"inputs": pair}, status=422)
    assert "128" in refused["error"]
    cut = post(server, "/predict", {"inputs": pair, "truncate": True})
    assert len(cut) == 3


# -- a ColBERT checkpoint (colbert-ai's HF_ColBERT) -------------------------------------------


@pytest.fixture(scope="module")
def colbert_vectors(folders: dict[str, Path]) -> dict[str, np.ndarray]:
    """colbert-ai's `ColBERT.doc` without its marker tokens and punctuation mask (which its
    tokenizer wrapper and scorer add, not the checkpoint): linear(BERT's last hidden states),
    each row L2-normalised."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    folder = folders[COLBERT]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    linear = load_file(folder / "model.safetensors")["linear.weight"]
    vectors = {}
    for text in [QUERY, *DOCS]:
        with torch.no_grad():
            hidden = bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            vectors[text] = torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()
    return vectors


def test_colbert_token_vectors_and_maxsim_rerank(server, colbert_vectors) -> None:
    every = post(server, "/embed_all", {"model": COLBERT, "inputs": DOCS})
    for matrix, text in zip(every, DOCS):
        assert np.array(matrix).shape == colbert_vectors[text].shape
        np.testing.assert_allclose(matrix, colbert_vectors[text], rtol=0, atol=1e-5)
    query = colbert_vectors[QUERY]
    maxsim = [
        float(np.max(query @ colbert_vectors[doc].T, axis=1).sum()) / len(query) for doc in DOCS
    ]
    scores, _ = rerank_scores(server, COLBERT)
    np.testing.assert_allclose(scores, maxsim, rtol=0, atol=1e-5)


# -- refusals ---------------------------------------------------------------------------------


def test_an_output_the_model_lacks_is_a_400_naming_what_it_computes(server) -> None:
    body = {"model": CLASSIFIER, "input": "a", "return_dense": False, "return_sparse": True}
    refused = post(server, "/v1/embeddings", body, status=400)
    assert refused["error"]["message"] == (
        f"model '{CLASSIFIER}' has no sparse output; it computes: classify"
    )
    classify = post(server, "/classify", {"model": BGE_M3, "input": "a"}, status=400)
    assert classify["error"]["message"] == (
        f"model '{BGE_M3}' has no classify output; it computes: dense, sparse, multivector"
    )
    tei = post(server, "/embed_all", {"model": SPLADE, "inputs": "a"}, status=422)
    assert tei["error"] == f"model '{SPLADE}' has no multivector output; it computes: sparse"
    mode = post(
        server,
        "/v1/rerank",
        {"model": SPLADE, "query": "a", "documents": ["b"], "mode": "dense"},
        status=400,
    )
    assert "cannot rank in mode 'dense'" in mode["error"]["message"]


# -- the README's hybrid-search example -------------------------------------------------------


def readme_example(heading: str) -> str:
    """The first ```python block under `## {heading}` in README.md."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_the_readme_hybrid_search_example_prints_the_best_document(server, flag_model) -> None:
    code = readme_example("Hybrid search")
    assert 'model="bge-m3"' in code and "http://localhost:8000/v1" in code
    printed = io.StringIO()
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(printed):
        # The README's own code, as a reader runs it.
        exec(code.replace("http://localhost:8000/v1", server.openai_base_url), namespace)  # noqa: S102
    query, documents = namespace["query"], namespace["documents"]
    # FlagEmbedding's dense and sparse scores of the same texts, weighted as the example does.
    expected = flag_model.compute_score(
        [(query, doc) for doc in documents], weights_for_different_modes=WEIGHTS
    )["sparse+dense"]
    np.testing.assert_allclose(namespace["scores"], expected, rtol=0, atol=1e-5)
    assert printed.getvalue() == documents[int(np.argmax(expected))] + "\n"
