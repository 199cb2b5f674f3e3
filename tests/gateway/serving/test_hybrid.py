"""Rerank scores from a model's outputs, checked against FlagEmbedding's formulas written out
plainly (BGEM3FlagModel.colbert_score, compute_lexical_matching_score, compute_score), and
the modes a model can rank in."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import ModelFacts, SparseVector
from gateway.errors import APIError
from gateway.serving import hybrid


def sparse(weights: dict[int, float]) -> SparseVector:
    ids = sorted(weights)
    return SparseVector(
        indices=np.array(ids, dtype=np.int64),
        values=np.array([weights[i] for i in ids], dtype=np.float32),
    )


def facts(*outputs: str, scores_pairs: bool = False) -> ModelFacts:
    return ModelFacts(dimension=4, max_model_len=16, outputs=outputs, scores_pairs=scores_pairs)


def test_sparse_score_is_the_sum_over_shared_ids_of_the_weight_products() -> None:
    query = {3: 0.5, 7: 1.25, 9: 2.0}
    documents = [{7: 2.0, 9: 0.5, 11: 4.0}, {1: 1.0}, {}]
    expected = [sum(w * d[t] for t, w in query.items() if t in d) for d in documents]
    scores = hybrid.sparse_scores(sparse(query), [sparse(d) for d in documents])
    np.testing.assert_allclose(scores, expected)
    assert expected == [1.25 * 2.0 + 2.0 * 0.5, 0, 0]


def test_colbert_score_is_maxsim_over_the_query_tokens_divided_by_their_number() -> None:
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 4)).astype(np.float32)
    documents = [rng.normal(size=(n, 4)).astype(np.float32) for n in (5, 1)]
    expected = [
        sum(max(float(q @ d) for d in document) for q in query) / len(query)
        for document in documents
    ]
    np.testing.assert_allclose(hybrid.maxsim_scores(query, documents), expected, rtol=1e-6)


def test_hybrid_is_the_weighted_sum_divided_by_the_sum_of_the_weights() -> None:
    dense, lexical, colbert = np.array([0.5, 0.1]), np.array([0.2, 0.9]), np.array([0.7, 0.3])
    scores = hybrid.hybrid_scores(dense, lexical, colbert, (0.4, 0.2, 0.4))
    np.testing.assert_allclose(scores, (0.4 * dense + 0.2 * lexical + 0.4 * colbert) / 1.0)
    scores = hybrid.hybrid_scores(dense, lexical, colbert, (1, 1, 2))
    np.testing.assert_allclose(scores, (dense + lexical + 2 * colbert) / 4)


def test_default_modes_follow_what_the_model_computes() -> None:
    assert hybrid.default_mode(facts("dense", "sparse", "multivector")) == "hybrid"
    assert hybrid.default_mode(facts("dense", "multivector")) == "dense"
    assert hybrid.default_mode(facts("multivector")) == "colbert"
    assert hybrid.default_mode(facts("dense")) == "dense"
    assert hybrid.default_mode(facts("sparse")) == "sparse"
    assert hybrid.resolve(facts("dense", "sparse", "multivector"), "m", None, None) == (
        "hybrid",
        (0.4, 0.2, 0.4),
    )


@pytest.mark.parametrize(
    ("model", "mode", "weights", "message"),
    [
        (facts("dense"), "colbert", None, "cannot rank in mode 'colbert': it computes dense"),
        (facts("dense", "multivector"), "hybrid", None, "its modes are dense, colbert"),
        (facts("classify"), None, None, "its modes are none"),
        (facts("dense", "sparse", "multivector"), "dense", [1, 1, 1], "hybrid mode only"),
        (facts("dense", "sparse", "multivector"), None, [1, -1, 1], "none negative"),
        (facts("dense", "sparse", "multivector"), None, [0, 0, 0], "not all zero"),
        (facts("dense", "sparse", "multivector"), None, [1, 1], "three numbers"),
        (facts("dense", "score", scores_pairs=True), "dense", None, "scores (query, document)"),
    ],
)
def test_a_mode_or_weights_the_model_cannot_use_are_a_400(model, mode, weights, message) -> None:
    with pytest.raises(APIError) as raised:
        hybrid.resolve(model, "m", mode, weights)
    assert raised.value.status == 400
    assert message in raised.value.message
