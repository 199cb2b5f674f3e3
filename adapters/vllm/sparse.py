"""Sparse vectors from what vLLM's poolers return: SPLADE's vocabulary-wide vector, or
bge-m3's weight per prompt token (after vLLM's BOS/EOS filter)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt

from adapters.base import SparseVector


def vocabulary_entries(vector: npt.NDArray[np.floating]) -> SparseVector:
    """The non-zero entries of a vocabulary-wide vector (SPLADE: log(1 + relu) is never
    negative, so non-zero means positive)."""
    flat = np.ravel(vector)
    indices = np.flatnonzero(flat > 0).astype(np.int64)
    return SparseVector(indices=indices, values=flat[indices].astype(np.float32))


def lexical_weights(
    token_ids: Sequence[int],
    weights: npt.NDArray[np.floating],
    *,
    bos: int | None,
    eos: int | None,
    unused: Collection[int],
) -> SparseVector:
    """bge-m3's lexical weights, as FlagEmbedding's `BGEM3FlagModel._process_token_weights`
    computes them: each token id's largest positive weight, without the tokenizer's cls, eos,
    pad and unk tokens. vLLM's pooler has already dropped the first weight when the prompt
    starts with BOS and the last when it ends with EOS; the ids are aligned the same way."""
    ids = list(token_ids)
    if ids and ids[0] == bos:
        ids = ids[1:]
    if ids and ids[-1] == eos:
        ids = ids[:-1]
    flat = np.ravel(weights)
    if len(ids) != len(flat):
        raise ValueError(f"{len(flat)} token weights for {len(ids)} tokens")
    best: dict[int, float] = {}
    for token, weight in zip(ids, flat.tolist()):
        if weight > 0 and token not in unused and weight > best.get(token, 0.0):
            best[token] = weight
    indices = np.array(sorted(best), dtype=np.int64)
    return SparseVector(
        indices=indices, values=np.array([best[i] for i in indices.tolist()], dtype=np.float32)
    )
