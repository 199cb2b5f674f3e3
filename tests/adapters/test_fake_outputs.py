"""The fake engine's sparse, token-vector and classifier outputs, which route tests rely on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from adapters.base import EmbedOptions, EngineSpec, InvalidInput
from adapters.fake import FakeEngine, fake_vector


def started(**kwargs: object) -> FakeEngine:
    engine = FakeEngine(EngineSpec(name="m", model="m"), **kwargs)  # type: ignore[arg-type]
    asyncio.run(engine.start())
    return engine


def test_sparse_weights_are_per_word_ids_without_special_tokens_max_over_repeats() -> None:
    engine = started(outputs=("dense", "sparse"))
    batch = asyncio.run(engine.embed_sparse(["red fox red", "fox"]))
    red, fox = (
        asyncio.run(engine.tokenize([w], add_special_tokens=False))[0].ids[0]
        for w in ("red", "fox")
    )
    first, second = batch.vectors
    assert first.indices.tolist() == sorted([red, fox])
    assert second.indices.tolist() == [fox]
    assert second.values[0] == first.values[first.indices.tolist().index(fox)]
    assert (first.values > 0).all() and first.values.dtype == np.float32
    assert batch.token_counts == [5, 3]


def test_token_vectors_drop_the_first_token_and_keep_the_last() -> None:
    engine = started(outputs=("multivector",), dimension=4)
    batch = asyncio.run(engine.embed_tokens(["a b c", ""]))
    assert [m.shape for m in batch.matrices] == [(4, 4), (1, 4)]
    assert np.allclose(np.linalg.norm(batch.matrices[0], axis=1), 1)
    np.testing.assert_allclose(batch.matrices[0][-1], fake_vector("[SEP]", 4), atol=1e-6)
    np.testing.assert_allclose(batch.matrices[1][0], fake_vector("[SEP]", 4), atol=1e-6)


def test_classify_gives_probabilities_over_the_labels_or_logits() -> None:
    engine = started(outputs=("classify",), labels=("a", "b", "c"))
    probs = asyncio.run(engine.classify(["good", ("q", "d")])).scores
    logits = asyncio.run(engine.classify(["good", ("q", "d")], activation=False)).scores
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1)
    assert np.allclose(np.exp(logits[0]) / np.exp(logits[0]).sum(), probs[0])


def test_an_output_the_model_lacks_is_invalid_input_naming_what_it_has() -> None:
    engine = started()
    with pytest.raises(InvalidInput, match="no sparse output; it computes: dense"):
        asyncio.run(engine.embed_sparse(["a"]))
    with pytest.raises(InvalidInput, match="no classify output"):
        asyncio.run(engine.classify(["a"]))


def test_outputs_obey_the_token_limits_as_embed_does() -> None:
    engine = started(outputs=("sparse",), max_model_len=4)
    with pytest.raises(InvalidInput):
        asyncio.run(engine.embed_sparse(["a b c d e"]))
    batch = asyncio.run(engine.embed_sparse(["a b c d e"], EmbedOptions(truncate="end")))
    assert batch.truncated == (0,)
