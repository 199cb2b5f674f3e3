"""A deterministic in-memory engine for tests and for measuring the gateway's own overhead.

Vectors depend only on the text (a seeded random unit vector), tokens are whitespace words
plus two special tokens around them (token ids sent by a client are taken as they are, from a
vocabulary of `vocab_size`), and latency and faults can be switched on per instance.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Sequence

import numpy as np

from adapters.base import (
    EmbedOptions,
    EmbeddingBatch,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    ModelFacts,
    Prompt,
)
from adapters.prompts import SpecialTokens, check_vocabulary, fit

# The two special tokens the fake tokenizer puts around a text, like BERT's [CLS] and [SEP].
_CLS, _SEP = "[CLS]", "[SEP]"


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
        vocab_size: int = 1000,
    ) -> None:
        self.spec = spec or EngineSpec(name="fake", model="fake")
        self._facts = ModelFacts(dimension=dimension, max_model_len=max_model_len)
        self.latency_s = latency_s
        self.start_delay_s = start_delay_s
        self.vocab_size = vocab_size
        self.fail_with: Exception | None = None  # raised by embed() when set
        self.started = False
        self.stopped = False
        # Each embed() call's prompts and options, for tests to inspect.
        self.calls: list[list[Prompt]] = []
        self.options: list[EmbedOptions] = []

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay_s)
        self.started = True

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        self.calls.append(list(prompts))
        self.options.append(options)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail_with is not None:
            raise self.fail_with
        tokens = [fake_tokens(p) if isinstance(p, str)
                  else [str(t) for t in check_vocabulary(p, self.vocab_size, index=i)]
                  for i, p in enumerate(prompts)]
        specials = [SpecialTokens(1, 1) if isinstance(p, str) else SpecialTokens()
                    for p in prompts]
        tokens, truncated = fit(tokens, options, max_model_len=self._facts.max_model_len,
                                model=self.spec.name, specials=specials)
        # A text that fits keeps the vector of its own string; truncated texts and client ids
        # get the vector of the tokens embedded.
        keys = [p if isinstance(p, str) and i not in truncated else " ".join(t)
                for i, (p, t) in enumerate(zip(prompts, tokens))]
        vectors = np.stack([fake_vector(key, self._facts.dimension) for key in keys])
        return EmbeddingBatch(vectors=vectors, token_counts=[len(t) for t in tokens],
                              truncated=truncated)

    async def check_health(self) -> None:
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if isinstance(self.fail_with, (EngineUnavailable, EngineFailure)):
            raise EngineUnavailable(str(self.fail_with))

    async def shutdown(self) -> None:
        self.stopped = True


def fake_tokens(text: str) -> list[str]:
    """Whitespace words between the two special tokens a BERT tokenizer adds."""
    return [_CLS, *text.split(), _SEP]


def fake_token_count(text: str) -> int:
    return len(fake_tokens(text))


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """A unit float32 vector that depends only on the text (FakeEngine's vector for a text
    that fits the window)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)
