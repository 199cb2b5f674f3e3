"""Sparse vectors from vLLM's pooler outputs."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.vllm.sparse import lexical_weights, vocabulary_entries

CLS, SEP, PAD, UNK = 101, 102, 0, 100


def test_vocabulary_entries_are_the_positive_ones_ascending() -> None:
    vector = vocabulary_entries(np.array([0.0, 0.5, 0.0, 2.0], dtype=np.float32))
    assert vector.indices.dtype == np.int64 and vector.values.dtype == np.float32
    assert vector.indices.tolist() == [1, 3] and vector.values.tolist() == [0.5, 2.0]


def test_lexical_weights_take_each_ids_largest_positive_weight() -> None:
    # [CLS] 7 5 7 9 [SEP]: vLLM returned the weights of 7 5 7 9 (BOS and EOS dropped).
    weights = np.array([0.25, 0.5, 0.75, 0.0], dtype=np.float32)
    vector = lexical_weights(
        [CLS, 7, 5, 7, 9, SEP], weights, bos=CLS, eos=SEP, unused={CLS, SEP, PAD, UNK}
    )
    assert vector.indices.tolist() == [5, 7] and vector.values.tolist() == [0.5, 0.75]


def test_lexical_weights_leave_out_special_tokens_inside_the_text() -> None:
    vector = lexical_weights(
        [CLS, UNK, 8, SEP], np.array([0.5, 0.25]), bos=CLS, eos=SEP, unused={CLS, SEP, PAD, UNK}
    )
    assert vector.indices.tolist() == [8]


def test_lexical_weights_of_ids_without_bos_and_eos_keep_every_weight() -> None:
    vector = lexical_weights([4, 3], np.array([0.5, 0.25]), bos=CLS, eos=SEP, unused=set())
    assert vector.indices.tolist() == [3, 4] and vector.values.tolist() == [0.25, 0.5]


def test_misaligned_weights_are_an_error() -> None:
    with pytest.raises(ValueError, match="3 token weights for 2 tokens"):
        lexical_weights([CLS, 4, 5, SEP], np.zeros(3), bos=CLS, eos=SEP, unused=set())
