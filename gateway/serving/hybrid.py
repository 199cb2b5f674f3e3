"""Rerank scores from a model's own outputs, as FlagEmbedding's `BGEM3FlagModel` computes
them (`compute_score`, `colbert_score`, `compute_lexical_matching_score`):

- dense: the dot product of the query's and document's vectors (their cosine: both are unit);
- sparse: the sum, over the token ids both have, of the query's weight times the document's;
- colbert: MaxSim, the sum over the query's token vectors of the largest dot product with any
  of the document's, divided by the number of query token vectors;
- hybrid: the weighted sum of the three divided by the sum of the weights
  (`[w_dense, w_sparse, w_colbert]`, default `[0.4, 0.2, 0.4]`, FlagEmbedding's).

Which modes a model can rank in follows from what it computes (`ModelFacts.outputs`); see
`modes` and `default_mode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from adapters.base import ModelFacts, SparseVector
from gateway.errors import invalid

MODES = ("dense", "sparse", "colbert", "hybrid")
# FlagEmbedding's compute_score default weights: dense, sparse, colbert.
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)
# The output each mode needs.
_NEEDS: dict[str, tuple[str, ...]] = {
    "dense": ("dense",),
    "sparse": ("sparse",),
    "colbert": ("multivector",),
    "hybrid": ("dense", "sparse", "multivector"),
    "pair": ("score",),
}


def modes(facts: ModelFacts) -> tuple[str, ...]:
    """The modes a model without a pair score can rank in: each one whose outputs it has."""
    return tuple(m for m in MODES if all(o in facts.outputs for o in _NEEDS[m]))


def default_mode(facts: ModelFacts) -> str:
    """hybrid when the model has all three outputs (bge-m3: the combination FlagEmbedding
    reports as best), else dense (cosine) when it has dense vectors: an encoder's token
    vectors are its raw hidden states, trained for no MaxSim, so they rank only when asked;
    else colbert (a ColBERT model's own scoring), else sparse (a SPLADE model)."""
    available = modes(facts)
    for mode in ("hybrid", "dense", "colbert", "sparse"):
        if mode in available:
            return mode
    return "dense"


def needs(mode: str) -> tuple[str, ...]:
    """The outputs `mode` is computed from."""
    return _NEEDS[mode]


def resolve(
    facts: ModelFacts, model: str, mode: str | None, weights: Sequence[float] | None
) -> tuple[str, tuple[float, float, float]]:
    """The request's mode and weights checked against the model: a mode it cannot rank in,
    or weights outside hybrid mode, are a 400."""
    if facts.scores_pairs:
        if mode is not None or weights is not None:
            raise invalid(
                f"model '{model}' scores (query, document) pairs itself; `mode` and `weights` "
                "apply to models that rank by their dense, sparse or token vectors",
                param="mode",
            )
        return "pair", DEFAULT_WEIGHTS
    available = modes(facts)
    chosen = mode or default_mode(facts)
    if chosen not in available:
        raise invalid(
            f"model '{model}' cannot rank in mode '{chosen}': it computes "
            f"{', '.join(facts.outputs)}, so its modes are {', '.join(available) or 'none'}",
            param="mode",
        )
    if weights is None:
        return chosen, DEFAULT_WEIGHTS
    if chosen != "hybrid":
        raise invalid(f"`weights` apply to hybrid mode only, not '{chosen}'", param="weights")
    return chosen, check_weights(weights)


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Three finite weights, none negative, with a positive sum."""
    if (
        len(weights) != 3
        or any(not math.isfinite(w) or w < 0 for w in weights)
        or sum(weights) <= 0
    ):
        raise invalid(
            "`weights` must be three numbers [dense, sparse, colbert], none negative and "
            f"not all zero, got {list(weights)}",
            param="weights",
        )
    return weights[0], weights[1], weights[2]


def sparse_scores(query: SparseVector, documents: Sequence[SparseVector]) -> np.ndarray:
    """Sum over shared token ids of the query's weight times the document's (float64)."""
    weights = dict(zip(query.indices.tolist(), query.values.astype(np.float64).tolist()))
    scores = np.zeros(len(documents))
    for i, document in enumerate(documents):
        scores[i] = sum(
            weights[t] * float(w)
            for t, w in zip(document.indices.tolist(), document.values.tolist())
            if t in weights
        )
    return scores


def maxsim_scores(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """ColBERT's MaxSim normalised by the query's token vectors (float64); a query or
    document without token vectors scores 0."""
    q = np.asarray(query, dtype=np.float64)
    scores = np.zeros(len(documents))
    if q.shape[0] == 0:
        return scores
    for i, document in enumerate(documents):
        d = np.asarray(document, dtype=np.float64)
        if d.shape[0]:
            scores[i] = (q @ d.T).max(axis=1).sum() / q.shape[0]
    return scores


def hybrid_scores(
    dense: np.ndarray, sparse: np.ndarray, colbert: np.ndarray, weights: Sequence[float]
) -> np.ndarray:
    """The weighted sum of the three scores divided by the sum of the weights."""
    w_dense, w_sparse, w_colbert = weights
    combined: np.ndarray = (w_dense * dense + w_sparse * sparse + w_colbert * colbert) / (
        w_dense + w_sparse + w_colbert
    )
    return combined
