"""Rerank routes over fake engines: parsing, nulls, top_n, documents, rank_fields, chunking,
errors with `detail`. `emb` reranks by cosine of fake vectors; `pairs` by word overlap."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.base import EngineFailure, EngineSpec
from adapters.fake import FakeEngine, fake_vector, fake_weight
from gateway.app import create_app
from gateway.config import InputPolicy, Settings
from gateway.serving.ranking import cosine
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import wait_ready

QUERY = "capital of france"
DOCS = ["bananas are yellow", "paris is the capital of france", "the capital of spain"]


@pytest.fixture
def pair_engine() -> FakeEngine:
    return FakeEngine(EngineSpec(name="pairs", model="pairs"), max_model_len=16, scores_pairs=True)


@pytest.fixture
def rr(pair_engine: FakeEngine) -> Iterator[TestClient]:
    registry = ModelRegistry(
        [
            ServedModel(
                "emb", (), FakeEngine(EngineSpec(name="emb", model="emb"), max_model_len=16)
            ),
            ServedModel("pairs", (), pair_engine),
            ServedModel(
                "prompted",
                (),
                FakeEngine(EngineSpec(name="prompted", model="prompted"), max_model_len=16),
                policy=InputPolicy(prompts={"query": "query: ", "document": "passage: "}),
            ),
        ]
    )
    with TestClient(create_app(registry), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank", "/v1/v2/rerank"])
def test_pair_model_answers_sorted_results_on_every_route(rr, path) -> None:
    response = rr.post(path, json={"model": "pairs", "query": QUERY, "documents": DOCS})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("rerank-")
    assert body == {
        "id": body["id"],
        "model": "pairs",
        "results": [
            {"index": 1, "relevance_score": sigmoid(2.0), "document": {"text": DOCS[1]}},
            {"index": 2, "relevance_score": sigmoid(4 * 2 / 3 - 2), "document": {"text": DOCS[2]}},
            {"index": 0, "relevance_score": sigmoid(-2.0), "document": {"text": DOCS[0]}},
        ],
        "meta": {
            "api_version": {"version": "2" if "v2" in path else "1", "is_experimental": False},
            "billed_units": {"search_units": 1},
        },
        # fake pair tokens: 3 query words + 3, 6, 4 document words + 3 specials each
        "usage": {"prompt_tokens": 31, "total_tokens": 31},
    }


def test_embedding_model_scores_are_cosines(rr) -> None:
    body = rr.post("/v1/rerank", json={"model": "emb", "query": QUERY, "documents": DOCS}).json()
    expected = cosine(fake_vector(QUERY, 8), np.stack([fake_vector(d, 8) for d in DOCS]))
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(3)], expected, rtol=1e-9)
    assert [r["index"] for r in body["results"]] == list(np.argsort(-expected))
    # query and each document embedded alone: words + 2 special tokens
    assert body["usage"]["prompt_tokens"] == 5 + 5 + 8 + 6


def test_embedding_model_embeds_each_side_with_its_prompt(rr) -> None:
    body = rr.post(
        "/v1/rerank", json={"model": "prompted", "query": QUERY, "documents": DOCS}
    ).json()
    expected = cosine(
        fake_vector("query: " + QUERY, 8), np.stack([fake_vector("passage: " + d, 8) for d in DOCS])
    )
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(3)], expected, rtol=1e-9)
    assert body["results"][0]["document"] == {"text": DOCS[int(np.argmax(expected))]}


def test_chunks_leave_room_for_the_document_prompt(rr) -> None:
    # Window 16 - (2 specials + 1 prompt word) = 13 words per chunk.
    long_doc = " ".join(f"w{i}" for i in range(20))
    body = rr.post(
        "/v1/rerank", json={"model": "prompted", "query": "w19", "documents": [long_doc]}
    ).json()
    chunks = [" ".join(f"w{i}" for i in range(13)), " ".join(f"w{i}" for i in range(13, 20))]
    expected = cosine(
        fake_vector("query: w19", 8), np.stack([fake_vector("passage: " + c, 8) for c in chunks])
    )
    assert body["results"][0]["relevance_score"] == pytest.approx(expected.max())


def test_explicit_nulls_take_defaults(rr) -> None:
    response = rr.post(
        "/v2/rerank",
        json={
            "model": "pairs",
            "query": QUERY,
            "documents": DOCS,
            "top_n": None,
            "max_tokens_per_doc": None,
            "return_documents": None,
            "rank_fields": None,
            "max_chunks_per_doc": None,
            "use_activation": None,
            "priority": None,
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3 and all("document" in r for r in results)


def test_top_n_limits_and_above_count_returns_all(rr) -> None:
    two = rr.post(
        "/v1/rerank", json={"model": "pairs", "query": QUERY, "documents": DOCS, "top_n": 2}
    ).json()["results"]
    assert [r["index"] for r in two] == [1, 2]
    many = rr.post(
        "/v1/rerank", json={"model": "pairs", "query": QUERY, "documents": DOCS, "top_n": 50}
    ).json()["results"]
    assert [r["index"] for r in many] == [1, 2, 0]


def test_return_documents_false_omits_documents(rr) -> None:
    results = rr.post(
        "/v1/rerank",
        json={"model": "pairs", "query": QUERY, "documents": DOCS, "return_documents": False},
    ).json()["results"]
    assert results == [
        {"index": i, "relevance_score": r["relevance_score"]} for i, r in zip([1, 2, 0], results)
    ]


def test_object_documents_rank_by_text_and_come_back_whole(rr, pair_engine) -> None:
    docs = [{"text": DOCS[0], "id": "a"}, {"text": DOCS[1], "id": "b"}]
    results = rr.post(
        "/v1/rerank", json={"model": "pairs", "query": QUERY, "documents": docs}
    ).json()["results"]
    assert [r["document"] for r in results] == [docs[1], docs[0]]
    assert pair_engine.calls[-1] == [DOCS[0], DOCS[1]]


def test_rank_fields_join_named_fields_in_order(rr, pair_engine) -> None:
    docs = [{"title": "france", "body": "paris capital"}, {"title": "fruit", "body": "bananas"}]
    response = rr.post(
        "/v1/rerank",
        json={
            "model": "pairs",
            "query": QUERY,
            "documents": docs,
            "rank_fields": ["title", "body"],
        },
    )
    assert response.status_code == 200
    assert pair_engine.calls[-1] == [
        "title: france\nbody: paris capital",
        "title: fruit\nbody: bananas",
    ]
    assert response.json()["results"][0]["index"] == 0


def test_use_activation_false_gives_raw_logits(rr) -> None:
    results = rr.post(
        "/v1/rerank",
        json={"model": "pairs", "query": QUERY, "documents": DOCS, "use_activation": False},
    ).json()["results"]
    assert [r["relevance_score"] for r in results] == pytest.approx([2.0, 4 * 2 / 3 - 2, -2.0])


def test_long_document_scores_its_best_chunk(rr, pair_engine) -> None:
    # Window 16 - (3 query words + 3 specials) = 10 words per chunk; the match is in chunk 2.
    long_doc = " ".join(["filler"] * 12) + " capital of france"
    response = rr.post(
        "/v1/rerank",
        json={"model": "pairs", "query": QUERY, "documents": ["capital city", long_doc]},
    )
    body = response.json()
    assert [r["index"] for r in body["results"]] == [1, 0]
    assert body["results"][0]["relevance_score"] == pytest.approx(sigmoid(2.0))
    assert body["results"][0]["document"] == {"text": long_doc}
    assert pair_engine.calls[-1] == [
        "capital city",
        " ".join(["filler"] * 10),
        "filler filler capital of france",
    ]


def test_max_tokens_and_max_chunks_per_doc(rr, pair_engine) -> None:
    doc = "a b c d e f capital of france"
    body = rr.post(
        "/v2/rerank",
        json={"model": "pairs", "query": QUERY, "documents": [doc], "max_tokens_per_doc": 3},
    ).json()
    assert pair_engine.calls[-1] == ["a b c", "d e f", "capital of france"]
    assert body["results"][0]["relevance_score"] == pytest.approx(sigmoid(2.0))
    capped = rr.post(
        "/v1/rerank",
        json={
            "model": "pairs",
            "query": QUERY,
            "documents": [doc],
            "max_tokens_per_doc": 3,
            "max_chunks_per_doc": 2,
        },
    )
    assert pair_engine.calls[-1] == ["a b c", "d e f"]
    assert capped.json()["results"][0]["relevance_score"] == pytest.approx(sigmoid(-2.0))


def test_embedding_model_chunks_long_documents_too(rr) -> None:
    long_doc = " ".join(f"w{i}" for i in range(30))
    body = rr.post(
        "/v1/rerank", json={"model": "emb", "query": "w29", "documents": [long_doc]}
    ).json()
    chunks = [" ".join(f"w{i}" for i in range(s, min(s + 14, 30))) for s in (0, 14, 28)]
    expected = cosine(fake_vector("w29", 8), np.stack([fake_vector(c, 8) for c in chunks]))
    assert body["results"][0]["relevance_score"] == pytest.approx(expected.max())
    assert body["meta"]["billed_units"]["search_units"] == 1


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "pairs", "query": QUERY, "documents": []}, "documents"),
        ({"model": "pairs", "query": "", "documents": DOCS}, "query"),
        ({"model": "pairs", "query": "  ", "documents": DOCS}, "query"),
        ({"model": "pairs", "documents": DOCS}, "query"),
        ({"model": "pairs", "query": QUERY}, "documents"),
        ({"model": "pairs", "query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
        ({"model": "pairs", "query": QUERY, "documents": DOCS, "top_n": "3"}, "top_n"),
        ({"model": "pairs", "query": QUERY, "documents": [{"title": "x"}]}, "documents"),
        ({"model": "pairs", "query": QUERY, "documents": [3]}, "documents"),
        (
            {"model": "pairs", "query": QUERY, "documents": DOCS, "return_documents": "yes"},
            "return_documents",
        ),
        (
            {"model": "pairs", "query": QUERY, "documents": DOCS, "rank_fields": "text"},
            "rank_fields",
        ),
        (
            {"model": "pairs", "query": QUERY, "documents": DOCS, "max_tokens_per_doc": 0},
            "max_tokens_per_doc",
        ),
        ({"query": QUERY, "documents": DOCS}, "model"),
    ],
)
def test_invalid_requests_answer_400_with_envelope_and_detail(rr, body, param) -> None:
    response = rr.post("/v1/rerank", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error == {
        "error": {
            "message": error["detail"],
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        },
        "detail": error["detail"],
    }


def test_query_too_long_for_the_window_is_400(rr) -> None:
    response = rr.post(
        "/rerank", json={"model": "pairs", "query": " ".join(["q"] * 20), "documents": ["d"]}
    )
    assert response.status_code == 400
    assert "no room" in response.json()["detail"]


def test_query_too_long_for_an_embedding_model_is_400_about_the_query(rr) -> None:
    response = rr.post(
        "/rerank", json={"model": "emb", "query": " ".join(["q"] * 20), "documents": ["d"]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "query"
    assert "input 0 has 22 tokens" in response.json()["detail"]


def test_unknown_model_is_404_with_detail(rr) -> None:
    response = rr.post("/v2/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.json()["detail"] == response.json()["error"]["message"]


def test_bad_json_and_wrong_method_carry_detail_on_rerank_paths(rr) -> None:
    bad = rr.post("/v1/rerank", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "detail" in bad.json()
    assert rr.get("/v2/rerank").json()["detail"].startswith("method GET")
    # Other routes keep the plain OpenAI envelope.
    assert "detail" not in rr.post("/v1/embeddings", content=b"{").json()


def test_engine_failure_is_500_with_detail(rr, pair_engine) -> None:
    pair_engine.fail_with = EngineFailure("boom")
    response = rr.post("/v1/rerank", json={"model": "pairs", "query": QUERY, "documents": DOCS})
    assert response.status_code == 500
    assert response.json()["detail"] == "boom"


# -- models that rank by their own outputs: dense, sparse, ColBERT MaxSim, hybrid -------------

M3 = ("dense", "sparse", "multivector")


@pytest.fixture
def by_outputs() -> Iterator[TestClient]:
    registry = ModelRegistry(
        [
            ServedModel(
                "m3",
                (),
                FakeEngine(
                    EngineSpec(name="m3", model="m3"), dimension=8, max_model_len=32, outputs=M3
                ),
            ),
            ServedModel(
                "colbert",
                (),
                FakeEngine(
                    EngineSpec(name="colbert", model="colbert"),
                    dimension=8,
                    max_model_len=32,
                    outputs=("multivector",),
                ),
            ),
            ServedModel(
                "short",
                (),
                FakeEngine(
                    EngineSpec(name="short", model="short"),
                    dimension=8,
                    max_model_len=8,
                    outputs=M3,
                ),
            ),
        ]
    )
    with TestClient(create_app(registry), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def flag_scores(query: str, documents: list[str]) -> dict[str, np.ndarray]:
    """FlagEmbedding's dense, lexical and colbert scores over the fake's vectors: the fake's
    token vectors are its words' vectors and its [SEP]'s (every token but the first), its sparse
    weights each word's `fake_weight`."""
    words = query.split()
    q_tokens = np.stack([fake_vector(w, 8) for w in [*words, "[SEP]"]])
    dense, lexical, colbert = [], [], []
    for document in documents:
        dense.append(float(fake_vector(query, 8) @ fake_vector(document, 8)))
        shared = set(words) & set(document.split())
        lexical.append(sum(fake_weight(w) ** 2 for w in shared))
        d_tokens = np.stack([fake_vector(w, 8) for w in [*document.split(), "[SEP]"]])
        colbert.append(float(np.sum(np.max(q_tokens @ d_tokens.T, axis=1)) / len(q_tokens)))
    return {"dense": np.array(dense), "sparse": np.array(lexical), "colbert": np.array(colbert)}


def scores_of(response) -> list[float]:
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return [r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])]


def test_a_token_vector_model_ranks_by_maxsim(by_outputs) -> None:
    body = {"model": "colbert", "query": QUERY, "documents": DOCS}
    expected = flag_scores(QUERY, DOCS)["colbert"]
    np.testing.assert_allclose(
        scores_of(by_outputs.post("/v1/rerank", json=body)), expected, rtol=1e-5
    )


def test_bge_m3_like_models_rank_hybrid_by_default_with_flagembeddings_weights(by_outputs) -> None:
    flag = flag_scores(QUERY, DOCS)
    expected = (0.4 * flag["dense"] + 0.2 * flag["sparse"] + 0.4 * flag["colbert"]) / 1.0
    body = {"model": "m3", "query": QUERY, "documents": DOCS}
    np.testing.assert_allclose(
        scores_of(by_outputs.post("/v1/rerank", json=body)), expected, rtol=1e-5
    )
    weighted = {**body, "mode": "hybrid", "weights": [1, 2, 0]}
    expected = (flag["dense"] + 2 * flag["sparse"]) / 3
    np.testing.assert_allclose(
        scores_of(by_outputs.post("/v1/rerank", json=weighted)), expected, rtol=1e-5
    )


@pytest.mark.parametrize("mode", ["dense", "sparse", "colbert"])
def test_each_mode_alone(by_outputs, mode) -> None:
    body = {"model": "m3", "query": QUERY, "documents": DOCS, "mode": mode}
    expected = flag_scores(QUERY, DOCS)[mode]
    np.testing.assert_allclose(
        scores_of(by_outputs.post("/v2/rerank", json=body)), expected, rtol=1e-5, atol=1e-7
    )


def test_hybrid_usage_counts_the_tokens_once(by_outputs) -> None:
    body = {"model": "m3", "query": QUERY, "documents": DOCS}
    hybrid = by_outputs.post("/v1/rerank", json=body).json()["usage"]
    dense = by_outputs.post("/v1/rerank", json={**body, "mode": "dense"}).json()["usage"]
    # The query and each document with [CLS] and [SEP].
    assert hybrid == dense == {"prompt_tokens": 5 + 5 + 8 + 6, "total_tokens": 24}


def test_modes_on_the_tei_and_vllm_routes(by_outputs) -> None:
    flag = flag_scores(QUERY, DOCS)
    tei = by_outputs.post(
        "/rerank", json={"model": "m3", "query": QUERY, "texts": DOCS, "mode": "sparse"}
    ).json()
    np.testing.assert_allclose(
        [r["score"] for r in sorted(tei, key=lambda r: r["index"])], flag["sparse"], atol=1e-6
    )
    vllm = by_outputs.post(
        "/score", json={"model": "m3", "text_1": QUERY, "text_2": DOCS, "mode": "colbert"}
    ).json()
    np.testing.assert_allclose([d["score"] for d in vllm["data"]], flag["colbert"], rtol=1e-5)


def test_long_documents_score_their_best_chunk_in_every_mode(by_outputs) -> None:
    # A window of 8 tokens: the long document is cut into chunks of at most 6 words.
    long = "bananas are yellow and sweet " + "paris is the capital"
    body = {"model": "short", "query": "paris capital", "documents": [long], "mode": "colbert"}
    chunks = ["bananas are yellow and sweet paris", "is the capital"]
    best = max(flag_scores("paris capital", chunks)["colbert"])
    np.testing.assert_allclose(
        scores_of(by_outputs.post("/v1/rerank", json=body)), [best], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "colbert", "mode": "hybrid"}, "mode", "cannot rank in mode 'hybrid'"),
        ({"model": "emb", "mode": "colbert"}, "mode", "its modes are dense"),
        ({"model": "pairs", "mode": "dense"}, "mode", "scores (query, document) pairs"),
        ({"model": "m3", "mode": "cosine"}, "mode", "must be one of"),
        ({"model": "m3", "weights": [1, 1]}, "weights", "three numbers"),
        ({"model": "m3", "weights": [0, 0, 0]}, "weights", "not all zero"),
        ({"model": "m3", "weights": [1, -1, 1]}, "weights", "none negative"),
        ({"model": "m3", "mode": "dense", "weights": [1, 1, 1]}, "weights", "hybrid mode only"),
    ],
)
def test_a_mode_or_weights_the_model_cannot_use_are_400(
    by_outputs, rr, body, param, fragment
) -> None:
    client = rr if body["model"] in ("emb", "pairs") else by_outputs
    response = client.post("/v1/rerank", json={**body, "query": QUERY, "documents": DOCS})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]


def test_token_vectors_past_the_cap_are_refused_before_the_work() -> None:
    engine = FakeEngine(EngineSpec(name="m3", model="m3"), max_model_len=32, outputs=M3)
    registry = ModelRegistry([ServedModel("m3", (), engine)])
    with TestClient(create_app(registry, Settings(max_token_vectors=12))) as client:
        wait_ready(client)
        body = {"model": "m3", "query": QUERY, "documents": DOCS}
        response = client.post("/v1/rerank", json=body)
        assert response.status_code == 400
        assert "--max-token-vectors" in response.json()["error"]["message"]
        assert engine.completed == 0
        assert client.post("/v1/rerank", json={**body, "mode": "dense"}).status_code == 200
