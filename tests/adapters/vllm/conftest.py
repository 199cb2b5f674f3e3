"""The vLLM adapter's tokenizer-side parts run on the built-in model's tokenizer, without an
engine. The adapter's outputs through the real engine are proven end to end, over tiny seeded
models (harness/models.py), in tests/e2e/test_outputs.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from transformers import AutoTokenizer

from adapters.base import EngineSpec, ModelFacts
from adapters.vllm import VLLMEngine
from gateway.config import resolve_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))


@pytest.fixture
def offline_engine(tokenizer) -> Callable[..., VLLMEngine]:
    """An engine with the tokenizer and a window but no AsyncLLM: `offline_engine(max_model_len,
    **spec)`."""

    def make(max_model_len: int = 32, **spec: Any) -> VLLMEngine:
        engine = VLLMEngine(EngineSpec(name="m", model="/m", **spec))
        engine._tokenizer = tokenizer
        engine._facts = ModelFacts(dimension=0, max_model_len=max_model_len, scores_pairs=True)
        return engine

    return make
