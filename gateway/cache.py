"""Embed each distinct input once: within a request always, across requests with an optional
bounded LRU cache of recent vectors.

`CachingEngine` wraps any `Engine` and changes only `embed`; everything else (start, facts,
health, shutdown, and any method it does not define) goes straight to the wrapped engine.
When a request has no repeated input and the cache is off, the wrapped engine gets the
request untouched.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np

from adapters.base import EmbeddingBatch, Engine, EngineError, ModelFacts

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    # Inputs answered from an identical input of the same request.
    deduplicated: int = 0


class EmbeddingCache:
    """At most `max_entries` vectors (with their token counts), least recently used first out."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("an embedding cache holds at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[np.ndarray, int]] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[np.ndarray, int] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry

    def put(self, key: Hashable, vector: np.ndarray, tokens: int) -> None:
        # A copy, so that the cache does not keep a whole response matrix alive per row.
        self._entries[key] = (vector.copy(), tokens)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1


class CachingEngine:
    """An `Engine` that embeds each distinct input once (see the module docstring)."""

    def __init__(self, engine: Engine, cache: EmbeddingCache | None = None) -> None:
        self.engine = engine
        self.cache = cache
        self.stats = cache.stats if cache is not None else CacheStats()

    @property
    def spec(self) -> Any:
        return self.engine.spec

    @property
    def facts(self) -> ModelFacts:
        return self.engine.facts

    def __getattr__(self, name: str) -> Any:
        # Methods this wrapper does not change (start, check_health, rerank, ...).
        return getattr(self.engine, name)

    async def shutdown(self) -> None:
        if self.cache is not None or self.stats.deduplicated:
            log.info("model %s: %s, %d cached vectors", self.engine.spec.name, self.stats,
                     len(self.cache) if self.cache is not None else 0)
        await self.engine.shutdown()

    async def embed(self, texts: Sequence[str], **options: Any) -> EmbeddingBatch:
        # Position of each input's first occurrence among the distinct inputs.
        slots: dict[str, int] = {}
        order = [slots.setdefault(text, len(slots)) for text in texts]
        if len(slots) == len(texts) and self.cache is None:
            return await self.engine.embed(texts, **options)
        self.stats.deduplicated += len(texts) - len(slots)
        distinct = list(slots)
        option_key = tuple(sorted(options.items()))
        found = self._lookup(distinct, option_key)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            try:
                batch = await self.engine.embed([distinct[i] for i in missing], **options)
            except EngineError as exc:
                if exc.index is None or len(distinct) == len(texts):
                    raise
                # Let the engine name the failing input by its index in the request.
                return await self.engine.embed(texts, **options)
            for row, i in enumerate(missing):
                found[i] = (batch.vectors[row], int(batch.token_counts[row]))
                if self.cache is not None:
                    self.cache.put((distinct[i], option_key), batch.vectors[row],
                                   int(batch.token_counts[row]))
        vectors = np.stack([entry[0] for entry in found])  # type: ignore[index]
        counts = [found[i][1] for i in order]  # type: ignore[index]
        return EmbeddingBatch(vectors=vectors[order], token_counts=counts)

    def _lookup(self, distinct: list[str], option_key: tuple) -> list[tuple[np.ndarray, int] | None]:
        if self.cache is None:
            return [None] * len(distinct)
        return [self.cache.get((text, option_key)) for text in distinct]
