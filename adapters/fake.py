"""A deterministic in-memory engine for tests and for measuring the gateway's own overhead.

Vectors depend only on the text (a seeded random unit vector), tokens are whitespace words plus
two special tokens, and latency and faults can be switched on per instance.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Sequence

import numpy as np

from adapters.base import (
    EmbeddingBatch,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    InvalidInput,
    ModelFacts,
)


class FakeEngine:
    """An `Engine` whose behaviour is set by attributes: latency, start delay, faults."""

    def __init__(
        self,
        spec: EngineSpec | None = None,
        *,
        dimension: int = 8,
        max_model_len: int = 512,
        latency_s: float = 0.0,
        start_delay_s: float = 0.0,
    ) -> None:
        self.spec = spec or EngineSpec(name="fake", model="fake")
        self._facts = ModelFacts(dimension=dimension, max_model_len=max_model_len)
        self.latency_s = latency_s
        self.start_delay_s = start_delay_s
        self.fail_with: Exception | None = None  # raised by embed() when set
        self.started = False
        self.stopped = False
        self.calls: list[list[str]] = []

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay_s)
        self.started = True

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    async def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        self.calls.append(list(texts))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail_with is not None:
            raise self.fail_with
        counts = [fake_token_count(t) for t in texts]
        for i, n in enumerate(counts):
            if n > self._facts.max_model_len:
                raise InvalidInput(
                    f"input {i} has {n} tokens, but model '{self.spec.name}' accepts at most "
                    f"{self._facts.max_model_len} tokens per input",
                    index=i,
                )
        vectors = np.stack([fake_vector(t, self._facts.dimension) for t in texts])
        return EmbeddingBatch(vectors=vectors, token_counts=counts)

    async def check_health(self) -> None:
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if isinstance(self.fail_with, (EngineUnavailable, EngineFailure)):
            raise EngineUnavailable(str(self.fail_with))

    async def shutdown(self) -> None:
        self.stopped = True


def fake_token_count(text: str) -> int:
    """Whitespace words plus the two special tokens a BERT tokenizer adds."""
    return len(text.split()) + 2


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """A unit float32 vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)
