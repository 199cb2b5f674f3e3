"""The adapter's tokenizer calls: the Rust batch encoder gives the transformers wrapper's ids,
and a tokenizer's failure (a Rust panic included) is the input's fault, never an interrupt's."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoTokenizer

from adapters.base import InvalidInput
from adapters.vllm.tokenizing import _tokenizer_call, rust_batch_encoder
from gateway.config import resolve_model_path

TEXTS = [
    "hello",
    "",
    "The capital of France is Paris.",
    "Ünïcödé, 日本語 and emoji 🚀",
    "word " * 400,
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines",
]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))


def test_rust_encoder_matches_the_wrapper_without_truncating(minilm_tokenizer) -> None:
    # MiniLM's tokenizer.json carries truncation and padding at 128 tokens.
    encode = rust_batch_encoder(minilm_tokenizer)
    assert encode is not None
    expected = minilm_tokenizer(TEXTS, add_special_tokens=True)["input_ids"]
    assert encode(TEXTS) == expected
    assert len(encode(["word " * 400])[0]) == 402


def test_encoder_owns_its_copy_of_the_tokenizer() -> None:
    # The wrapper switches truncation on and off per call; the encoder must not follow it.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    encode = rust_batch_encoder(tokenizer)
    assert encode is not None
    tokenizer._tokenizer.enable_truncation(5)
    assert len(encode(["word " * 50])[0]) == 52


def test_no_rust_encoder_for_a_slow_tokenizer() -> None:
    class Slow:
        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [[1] for _ in texts]}

    assert rust_batch_encoder(Slow()) is None


class PanicException(BaseException):
    """What pyo3 raises for a Rust panic in `tokenizers`: not an Exception (PyO3#2783)."""


def test_tokenizer_panic_becomes_invalid_input() -> None:
    def panics(texts, add_special_tokens):
        raise PanicException("byte index 3 is not a char boundary")

    with pytest.raises(InvalidInput, match="tokenizer rejected the input: PanicException"):
        _tokenizer_call(panics, ["x"], True)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_tokenizer_does_not_swallow_interrupts(exc) -> None:
    def interrupted(texts, add_special_tokens):
        raise exc()

    with pytest.raises(exc):
        _tokenizer_call(interrupted, ["x"], True)
