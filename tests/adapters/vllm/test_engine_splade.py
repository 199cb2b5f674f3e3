"""A SPLADE model through the real engine: its sparse vectors equal sentence-transformers'
SparseEncoder's, it has no dense output, and its limits are `embed`'s."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EmbedOptions, InvalidInput

pytestmark = [
    pytest.mark.engine,
    # vLLM's shut-down engine leaves a ZeroMQ context to the garbage collector.
    pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning"),
]
TEXTS = ["the cat sat on the mat", "sparse retrieval with learned term weights", "a"]


@pytest.fixture(scope="module")
def engine(start_engine, splade_path):
    return start_engine(splade_path)


@pytest.fixture(scope="module")
def reference(splade_path) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(str(splade_path), device="cpu")
    return encoder.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()


def test_splade_is_recognised_as_sparse_only(engine) -> None:
    assert engine.facts.outputs == ("sparse",)
    assert engine.facts.dimension == 0


def test_sparse_vectors_equal_sentence_transformers(engine, loop, reference) -> None:
    batch = loop.run_until_complete(engine.embed_sparse(TEXTS))
    for vector, expected in zip(batch.vectors, reference):
        assert vector.indices.dtype == np.int64 and vector.values.dtype == np.float32
        np.testing.assert_array_equal(vector.indices, np.flatnonzero(expected))
        assert 0 < len(vector.indices) < 1000
        np.testing.assert_allclose(vector.values, expected[vector.indices], rtol=0, atol=1e-5)
    print(
        "SPLADE max |vLLM - SparseEncoder|:",
        max(float(np.abs(v.values - e[v.indices]).max()) for v, e in zip(batch.vectors, reference)),
    )
    tokens = loop.run_until_complete(engine.tokenize(TEXTS))
    assert list(batch.token_counts) == [len(t.ids) for t in tokens]


def test_sparse_truncates_as_embed_does(engine, loop) -> None:
    long = "word " * 300
    with pytest.raises(InvalidInput, match="accepts at most 128 tokens"):
        loop.run_until_complete(engine.embed_sparse([long]))
    batch = loop.run_until_complete(
        engine.embed_sparse([long, "short"], EmbedOptions(truncate="end", max_tokens=16))
    )
    assert batch.truncated == (0,) and batch.token_counts[0] == 16
    with pytest.raises(InvalidInput, match="10 tokens in all, but a request may have at most 9"):
        loop.run_until_complete(
            engine.embed_sparse(
                ["one two three", "four five six"], EmbedOptions(max_total_tokens=9)
            )
        )


def test_dense_and_tokens_are_refused(engine, loop) -> None:
    with pytest.raises(InvalidInput, match="has no dense output; it computes: sparse"):
        loop.run_until_complete(engine.embed(["a"]))
    with pytest.raises(InvalidInput, match="has no multivector output"):
        loop.run_until_complete(engine.embed_tokens(["a"]))
