"""The pure parts of the vLLM adapter: engine arguments from a spec, tokenizer faults."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import EngineSpec, InvalidInput
from adapters.vllm_engine import VLLMEngine, engine_arguments


def test_defaults_raise_asyncllm_limits_to_offline_values() -> None:
    args = engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=False)
    assert args["max_num_batched_tokens"] == 16384
    assert args["max_num_seqs"] == 1024
    assert args["runner"] == "pooling"
    assert args["dtype"] == "auto"
    assert args["gpu_memory_utilization"] == 0.9
    assert "max_model_len" not in args


def test_cpu_defaults_and_long_models() -> None:
    spec = EngineSpec(name="m", model="/m", max_model_len=32768,
                      engine_kwargs={"enforce_eager": True})
    args = engine_arguments(spec, on_cpu=True)
    assert args["dtype"] == "float32"
    assert args["gpu_memory_utilization"] == 0.2
    # A whole prompt must fit in one engine step for pooling models.
    assert args["max_num_batched_tokens"] == 32768
    assert args["enforce_eager"] is True


class PanicException(BaseException):
    """What pyo3 raises for a Rust panic in `tokenizers`: not an Exception (PyO3#2783)."""


def engine_with_tokenizer(tokenizer) -> VLLMEngine:
    engine = VLLMEngine(EngineSpec(name="m", model="/m"))
    engine._tokenizer = tokenizer
    return engine


def test_tokenizer_panic_becomes_invalid_input() -> None:
    def panics(texts, add_special_tokens):
        raise PanicException("byte index 3 is not a char boundary")

    with pytest.raises(InvalidInput, match="tokenizer rejected the input"):
        engine_with_tokenizer(panics)._tokenize_now(["x"])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_tokenizer_does_not_swallow_interrupts(exc) -> None:
    def interrupted(texts, add_special_tokens):
        raise exc()

    with pytest.raises(exc):
        engine_with_tokenizer(interrupted)._tokenize_now(["x"])
