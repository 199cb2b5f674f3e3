"""Documents cut into pieces whose prompts fit the window, on the built-in model's tokenizer."""

from __future__ import annotations

import pytest

from adapters.base import InvalidInput
from adapters.vllm.splitting import SplitRequest


def test_split_keeps_every_word_and_fits_the_window(tokenizer, offline_engine) -> None:
    text = " ".join(f"word{i} unbelievably" for i in range(40))
    engine = offline_engine(max_model_len=32)
    (pieces,) = engine._split_now(SplitRequest([text], "short query", None))
    budget = 32 - len(tokenizer("short query", "")["input_ids"])
    assert len(pieces) > 1
    assert "".join(pieces) == text
    for piece in pieces:
        assert len(tokenizer("short query", piece)["input_ids"]) <= 32
        assert len(tokenizer(piece, add_special_tokens=False)["input_ids"]) <= budget


def test_split_respects_max_tokens_and_leaves_short_texts_whole(offline_engine) -> None:
    engine = offline_engine(max_model_len=512)
    short, long = engine._split_now(SplitRequest(["a b", "one two three four five"], None, 2))
    assert short == ["a b"]
    assert long == ["one two ", "three four ", "five"]


def test_split_leaves_room_for_a_document_prompt(tokenizer, offline_engine) -> None:
    engine = offline_engine(max_model_len=16)
    text = " ".join(f"w{i}" for i in range(30))
    (pieces,) = engine._split_now(SplitRequest([text], None, None, lambda t: "passage: " + t))
    assert "".join(pieces) == text and len(pieces) > 1
    for piece in pieces:
        assert len(tokenizer("passage: " + piece)["input_ids"]) <= 16


def test_split_refuses_a_query_that_fills_the_window(offline_engine) -> None:
    with pytest.raises(InvalidInput, match="no room"):
        offline_engine(max_model_len=8)._split_now(SplitRequest(["d"], "a b c d e f g", None))
