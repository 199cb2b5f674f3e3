"""The Engine protocol, its result types, and the engine error vocabulary.

The HTTP layer talks to every engine through `Engine` only. Adapters translate their own
library's exceptions into the errors below, in one place each, so that the HTTP layer never
sees a vLLM (or other) exception type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EngineSpec:
    """What an adapter needs to build one engine: the model and its engine arguments."""

    name: str
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int = 16384
    max_num_seqs: int = 1024
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFacts:
    """Facts about a loaded model that requests are validated against."""

    dimension: int
    max_model_len: int


@dataclass(frozen=True)
class EmbeddingBatch:
    """Vectors (n x dimension, float32, row i for prompt i) and each prompt's token count."""

    vectors: np.ndarray
    token_counts: Sequence[int]

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))


class EngineError(Exception):
    """Base of every error an engine reports to the HTTP layer."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Which prompt of the batch caused it, when the engine knows.
        self.index = index


class InvalidInput(EngineError):
    """The prompt cannot be embedded as given (too long, bad token ids, ...): a client error."""


class EngineOverloaded(EngineError):
    """The engine refuses more work right now; the client may retry later."""


class EngineUnavailable(EngineError):
    """The engine is not loaded, has died, or is shutting down."""


class EngineFailure(EngineError):
    """The engine failed on a request it accepted; not the client's fault."""


@runtime_checkable
class Engine(Protocol):
    """One loaded model. Implementations: `adapters.vllm_engine.VLLMEngine`, `adapters.fake.FakeEngine`."""

    spec: EngineSpec

    async def start(self) -> None:
        """Load the model. Called once, by the application lifespan."""

    @property
    def facts(self) -> ModelFacts:
        """Dimension and context length; valid after `start()`."""

    async def embed(
        self, texts: Sequence[str], *, max_total_tokens: int | None = None
    ) -> EmbeddingBatch:
        """Embed each text as its own prompt; rows in input order. Raises `InvalidInput`
        before any engine work when the texts tokenize to more than `max_total_tokens`.
        Cancelling the call aborts the engine work."""

    async def check_health(self) -> None:
        """Return if the engine can serve; raise `EngineUnavailable` otherwise."""

    async def shutdown(self) -> None:
        """Release the engine (processes, memory). Safe to call twice."""
