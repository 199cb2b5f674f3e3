"""A deterministic in-memory engine for tests and for measuring the gateway's own overhead.

Vectors depend only on the text (a seeded random unit vector), tokens are whitespace words
plus two special tokens around them (token ids sent by a client are taken as they are, from a
vocabulary of `vocab_size`), pair scores are word overlap, and latency and faults can be
switched on per instance.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Callable, Sequence

import numpy as np

from adapters.base import (
    EmbedOptions,
    EmbeddingBatch,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    ModelFacts,
    InvalidInput,
    ModelFacts,
    Prompt,
    ScoreBatch,
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
        scores_pairs: bool = False,
        vocab_size: int = 1000,
    ) -> None:
        self.spec = spec or EngineSpec(name="fake", model="fake")
        self._facts = ModelFacts(dimension=dimension, max_model_len=max_model_len,
                                 scores_pairs=scores_pairs)
        self.latency_s = latency_s
        self.start_delay_s = start_delay_s
        self.vocab_size = vocab_size
        self.fail_with: Exception | None = None  # raised by embed() when set
        self.started = False
        self.stopped = False
        # Each embed() or score() call's prompts, and each embed() call's options, for tests.
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
        await self._work(prompts)
        self.options.append(options)
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

    async def score(self, query: str, documents: Sequence[str], *,
                    activation: bool | None = None) -> ScoreBatch:
        if not self._facts.scores_pairs:
            raise InvalidInput(f"model '{self.spec.name}' is an embedding model")
        await self._work(documents)
        counts = [fake_token_count(query) + fake_token_count(d) - 1 for d in documents]
        for i, n in enumerate(counts):
            if n > self._facts.max_model_len:
                raise InvalidInput(
                    f"input {i} has {n} tokens, but model '{self.spec.name}' accepts at most "
                    f"{self._facts.max_model_len} tokens per input",
                    index=i,
                )
        logits = np.array([fake_logit(query, d) for d in documents])
        use_activation = self.spec.rerank_activation if activation is None else activation
        return ScoreBatch(scores=1 / (1 + np.exp(-logits)) if use_activation else logits,
                          token_counts=counts)

    async def split(self, texts: Sequence[str], *, query: str | None = None,
                    max_tokens: int | None = None,
                    wrap: Callable[[str], str] | None = None) -> list[list[str]]:
        if query is not None:
            overhead = fake_token_count(query) + 1
        else:
            overhead = fake_token_count(wrap("") if wrap is not None else "")
        budget = self._facts.max_model_len - overhead
        if budget < 1:
            raise InvalidInput("the query leaves no room for a document", index=0)
        budget = min(budget, max_tokens or budget)
        pieces = []
        for text in texts:
            words = text.split()
            if len(words) <= budget:
                pieces.append([text])
            else:
                pieces.append([" ".join(words[i:i + budget])
                               for i in range(0, len(words), budget)])
        return pieces

    async def _work(self, prompts: Sequence[Prompt]) -> None:
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        self.calls.append(list(prompts))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail_with is not None:
            raise self.fail_with

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


def fake_logit(query: str, document: str) -> float:
    """Share of the query's words found in the document, mapped onto [-2, 2]."""
    wanted = set(query.lower().split())
    found = wanted & set(document.lower().split())
    return 4.0 * len(found) / max(len(wanted), 1) - 2.0
