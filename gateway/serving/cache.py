"""Embed each distinct prompt once: within a request always, across requests with an optional
bounded LRU cache of recent vectors, keyed by prompt (text or token ids) and `EmbedOptions`
(one cache per model).

`CachingEngine` wraps any `Engine` and changes only `embed`; every other method of the Engine
protocol (start, facts, score, split, tokenize,
detokenize, health, shutdown) goes straight to the wrapped engine.
When a request has no repeated input and the cache is off, the wrapped engine gets the
request untouched.

The cache across requests is partitioned by API key (`gateway.tenancy.current_tenant`): a
hit answers faster, so a shared cache would let one key tell which inputs another key sent
recently. Batch lines use their batch owner's partition (the runner sets the owner as
the caller); calls with no caller set use only the deduplication within their own request.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from adapters.base import (
    ClassBatch,
    ClassInput,
    EmbeddingBatch,
    EmbedOptions,
    Engine,
    EngineError,
    EngineSpec,
    ModelFacts,
    MultiVectorBatch,
    Prompt,
    ScoreBatch,
    SparseBatch,
    SplitLimits,
    StepReporter,
    Tokens,
    no_report,
)
from gateway.tenancy.keys import current_tenant

log = logging.getLogger("gateway.cache")  # the name log filters match on


@dataclass(frozen=True)
class _Entry:
    """One prompt's result: its vector, its token count and whether it was truncated."""

    vector: np.ndarray
    tokens: int
    truncated: bool


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    # Inputs answered from an identical input of the same request.
    deduplicated: int = 0


# Default byte bound: inputs may be up to a model window long, so a count alone does not
# bound memory (10,000 long inputs can be gigabytes of keys).
DEFAULT_MAX_BYTES = 256 * 2**20


def _size(key: Hashable, entry: _Entry) -> int:
    """Approximate bytes an entry holds: its key's prompt (text, or token ids at 8 bytes plus
    the tuple's slot each) and its vector."""
    prompt = key[0] if isinstance(key, tuple) and key else key
    held = sys.getsizeof(prompt)
    if isinstance(prompt, tuple):
        held += 32 * len(prompt)
    return held + entry.vector.nbytes + 200  # the options, the entry and dict slots


class EmbeddingCache:
    """At most `max_entries` vectors (with their token counts) and about `max_bytes` bytes of
    keys and vectors, least recently used first out. An entry bigger than `max_bytes` alone
    is not kept."""

    def __init__(self, max_entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("an embedding cache holds at least one entry and one byte")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[_Entry, int]] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> _Entry | None:
        found = self._entries.get(key)
        if found is None:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return found[0]

    def put(self, key: Hashable, entry: _Entry) -> None:
        # A copy, so that the cache does not keep a whole response matrix alive per row.
        kept = _Entry(entry.vector.copy(), entry.tokens, entry.truncated)
        size = _size(key, kept)
        if size > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        self._entries[key] = (kept, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
            self.stats.evictions += 1


class CachingEngine(Engine):
    """An `Engine` that embeds each distinct input once (see the module docstring)."""

    def __init__(self, engine: Engine, cache: EmbeddingCache | None = None) -> None:
        self.engine = engine
        self.cache = cache
        self.stats = cache.stats if cache is not None else CacheStats()
        # A plain attribute, as `Engine` declares it; an engine's spec never changes.
        self.spec: EngineSpec = engine.spec

    @property
    def facts(self) -> ModelFacts:
        return self.engine.facts

    async def start(self, report: StepReporter = no_report) -> None:
        await self.engine.start(report)

    async def score(
        self, query: str, documents: Sequence[str], *, activation: bool | None = None
    ) -> ScoreBatch:
        return await self.engine.score(query, documents, activation=activation)

    # Sparse vectors, token vectors and label scores are not cached: only `embed` is.
    async def embed_sparse(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> SparseBatch:
        return await self.engine.embed_sparse(prompts, options)

    async def embed_tokens(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> MultiVectorBatch:
        return await self.engine.embed_tokens(prompts, options)

    async def classify(
        self,
        inputs: Sequence[ClassInput],
        options: EmbedOptions = EmbedOptions(),
        *,
        activation: bool = True,
    ) -> ClassBatch:
        return await self.engine.classify(inputs, options, activation=activation)

    async def split(
        self,
        texts: Sequence[str],
        *,
        query: str | None = None,
        max_tokens: int | None = None,
        wrap: Callable[[str], str] | None = None,
        limits: SplitLimits = SplitLimits(),
    ) -> list[list[str]]:
        return await self.engine.split(
            texts, query=query, max_tokens=max_tokens, wrap=wrap, limits=limits
        )

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[Tokens]:
        return await self.engine.tokenize(texts, add_special_tokens=add_special_tokens)

    async def detokenize(
        self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool = False
    ) -> list[str]:
        return await self.engine.detokenize(ids, skip_special_tokens=skip_special_tokens)

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def shutdown(self) -> None:
        if self.cache is not None or self.stats.deduplicated:
            log.info(
                "model %s: %s, %d cached vectors",
                self.engine.spec.name,
                self.stats,
                len(self.cache) if self.cache is not None else 0,
            )
        await self.engine.shutdown()

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        # Position of each prompt's first occurrence among the distinct prompts; token-id
        # prompts are keyed by their ids (a text and an id tuple never compare equal).
        slots: dict[Hashable, int] = {}
        keys = [p if isinstance(p, str) else tuple(p) for p in prompts]
        order = [slots.setdefault(key, len(slots)) for key in keys]
        if len(slots) == len(prompts) and self.cache is None:
            return await self.engine.embed(prompts, options)
        self.stats.deduplicated += len(prompts) - len(slots)
        first = {slot: i for i, slot in reversed(list(enumerate(order)))}
        distinct = [prompts[first[slot]] for slot in range(len(slots))]
        tenant = current_tenant.get()
        cache = self.cache if tenant is not None else None
        cache_keys = [(key, options, tenant.name if tenant else None) for key in slots]
        found = self._lookup(cache, cache_keys)
        missing = [i for i, entry in enumerate(found) if entry is None]
        tokenization_s = 0.0
        if missing:
            try:
                batch = await self.engine.embed([distinct[i] for i in missing], options)
            except EngineError as exc:
                if exc.index is None or len(distinct) == len(prompts):
                    raise
                # Let the engine name the failing prompt by its index in the request.
                return await self.engine.embed(prompts, options)
            tokenization_s = batch.tokenization_s
            cut = set(batch.truncated)
            for row, i in enumerate(missing):
                entry = _Entry(batch.vectors[row], int(batch.token_counts[row]), row in cut)
                found[i] = entry
                if cache is not None:
                    cache.put(cache_keys[i], entry)
        vectors = np.stack([entry.vector for entry in found])  # type: ignore[union-attr]
        rows = [found[slot] for slot in order]
        return EmbeddingBatch(
            vectors=vectors[order],
            token_counts=[entry.tokens for entry in rows],  # type: ignore[union-attr]
            truncated=tuple(i for i, entry in enumerate(rows) if entry.truncated),  # type: ignore[union-attr]
            tokenization_s=tokenization_s,
        )

    @staticmethod
    def _lookup(cache: EmbeddingCache | None, keys: Sequence[Hashable]) -> list[_Entry | None]:
        if cache is None:
            return [None] * len(keys)
        return [cache.get(key) for key in keys]
