"""A model's other outputs: sparse vectors, token vectors (ColBERT) and label scores, each
computed as `embed` computes vectors (the same prompts, truncation, cost checks, admission,
timeout and disconnect watch), and several of them for one set of prompts (`/v1/embeddings`
with `return_sparse` or `return_colbert_vecs`). Every route that asks for one calls here.

Token vectors grow with tokens x the model's token dimension, so a request's tokens are
bounded by `--max-token-vectors` as well as `--max-request-tokens` when it asks for them: the
engine counts the tokens and refuses before any work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from adapters.base import (
    ClassBatch,
    ClassInput,
    EmbeddingBatch,
    EmbedOptions,
    InvalidInput,
    ModelFacts,
    MultiVectorBatch,
    SparseBatch,
    require_output,
)
from gateway.config import Settings
from gateway.errors import APIError, ErrorKind, invalid
from gateway.serving import costs
from gateway.serving.embedding import EmbedJob
from gateway.serving.encoding import refuse_non_finite
from gateway.serving.guard import Guard, run_guarded
from gateway.serving.inputs import Truncation, engine_call
from gateway.serving.registry import ServedModel

T = TypeVar("T")


def check_outputs(served: ServedModel, outputs: Sequence[str], param: str | None = None) -> None:
    """400 naming what the model computes, unless it computes every one of `outputs`."""
    for output in outputs:
        try:
            require_output(served.engine.facts, served.name, output)
        except InvalidInput as exc:
            raise invalid(exc.message, param=param) from exc


def token_vector_limit(settings: Settings) -> int:
    """The most tokens a request that returns token vectors may have."""
    return min(settings.max_request_tokens, settings.max_token_vectors)


def token_vector_limited(
    facts: ModelFacts, settings: Settings, call: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """`call` with the engine's refusal of too many tokens in all made to name
    `--max-token-vectors` when that is the binding limit. The refusal is the `InvalidInput`
    with no input's index that `Engine.embed`'s and `SplitLimits`' token totals raise (both
    say "tokens in all"; a split's chunk count is refused in other words)."""
    if settings.max_token_vectors >= settings.max_request_tokens:
        return call

    async def limited() -> T:
        try:
            return await call()
        except InvalidInput as exc:
            if exc.index is not None or "tokens in all" not in exc.message:
                raise
            most = settings.max_token_vectors
            raise InvalidInput(
                f"{exc.message}: a request for token vectors may have at most {most} tokens "
                f"(--max-token-vectors; {most} x {facts.token_dimension} floats x 4 bytes = "
                f"{most * facts.token_dimension * 4 / 2**20:.0f} MiB)"
            ) from exc

    return limited


@dataclass(frozen=True)
class Outputs:
    """What one set of prompts computed: the dense vectors, sparse vectors and token vectors
    asked for (None: not asked), with the accounting of the first one computed (the same
    prompts, so the same tokens: usage counts them once)."""

    dense: EmbeddingBatch | None = None
    sparse: SparseBatch | None = None
    tokens: MultiVectorBatch | None = None

    @property
    def first(self) -> EmbeddingBatch | SparseBatch | MultiVectorBatch:
        batch = self.dense or self.sparse or self.tokens
        assert batch is not None
        return batch

    @property
    def total_tokens(self) -> int:
        return self.first.total_tokens

    @property
    def truncated(self) -> tuple[int, ...]:
        return self.first.truncated


async def compute(job: EmbedJob, guard: Guard, outputs: Sequence[str]) -> Outputs:
    """The job's `outputs` (of "dense", "sparse", "multivector"), from the same prompts and
    options (prompt template, truncation), under one admission and the request's guard. A
    model that lacks one is refused before any work; the dense vectors go through the
    embedding cache, the others are computed each time."""
    served, settings = job.served, guard.settings
    check_outputs(served, outputs)
    guard.note(model=served.name, inputs=len(job.inputs))
    call = await engine_call(
        served, job.name, job.inputs, job.input_type, job.truncation, guard.decoder, settings
    )
    limit = settings.max_request_tokens
    if "multivector" in outputs:
        limit = token_vector_limit(settings)
    options = replace(call.options, max_total_tokens=limit, normalize=job.normalize)
    engine = served.engine

    async def work() -> Outputs:
        # All at once, so that the engine batches the outputs' requests together; a task
        # group cancels the others (and their engine work) when one fails.
        dense = sparse = tokens = None
        try:
            async with asyncio.TaskGroup() as group:
                if "dense" in outputs:
                    dense = group.create_task(engine.embed(call.prompts, options))
                if "sparse" in outputs:
                    sparse = group.create_task(engine.embed_sparse(call.prompts, options))
                if "multivector" in outputs:
                    tokens = group.create_task(engine.embed_tokens(call.prompts, options))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure, as one engine call's
        return Outputs(
            dense=dense.result() if dense else None,
            sparse=sparse.result() if sparse else None,
            tokens=tokens.result() if tokens else None,
        )

    guarded = (
        token_vector_limited(engine.facts, settings, work) if "multivector" in outputs else work
    )
    result = await run_guarded(guard, served, len(job.inputs), guarded)
    refuse_non_finite_outputs(result)
    guard.timing.tokenization_s = result.first.tokenization_s
    guard.note(tokens=result.total_tokens)
    return result


async def embed_sparse(job: EmbedJob, guard: Guard) -> SparseBatch:
    """The job's sparse vectors (token id -> weight, non-zero weights only)."""
    batch = (await compute(job, guard, ("sparse",))).sparse
    assert batch is not None
    return batch


async def embed_tokens(job: EmbedJob, guard: Guard) -> MultiVectorBatch:
    """The job's token vectors, refused before the work past `--max-token-vectors` tokens."""
    batch = (await compute(job, guard, ("multivector",))).tokens
    assert batch is not None
    return batch


def refuse_non_finite_outputs(result: Outputs) -> None:
    """A NaN or infinite weight or token vector is an engine fault, as a dense one is."""
    if result.dense is not None:
        refuse_non_finite(result.dense.vectors)
    rows = [v.values for v in result.sparse.vectors] if result.sparse else []
    rows += result.tokens.matrices if result.tokens else []
    for i, values in enumerate(rows):
        if not np.isfinite(values).all():
            raise APIError(
                ErrorKind.ENGINE_FAILURE,
                f"the engine produced a non-finite vector for input {i % len(result.first.token_counts)}",
                param="input",
            )


@dataclass(frozen=True)
class ClassifyJob:
    """What to classify: texts or (text, text_pair) pairs for `served`, with the request's
    truncation; `activation=False` asks for the raw logits."""

    served: ServedModel
    inputs: list[ClassInput]
    truncation: Truncation = Truncation()
    activation: bool = True


async def classify(job: ClassifyJob, guard: Guard) -> ClassBatch:
    """Each input's label scores (columns in the order of `facts.labels`), checked for cost
    before any tokenizing (a pair counts both its texts) and run under the request's guard."""
    served, settings = job.served, guard.settings
    check_outputs(served, ("classify",))
    guard.note(model=served.name, inputs=len(job.inputs))
    truncate = job.truncation.truncate or served.policy.truncate
    costs.check_chars(
        [len(i) if isinstance(i, str) else len(i[0]) + len(i[1]) for i in job.inputs],
        truncating=truncate != "none",
        settings=settings,
        window=served.engine.facts.max_model_len,
        model=served.name,
    )
    options = EmbedOptions(
        truncate=truncate,
        max_tokens=job.truncation.max_tokens,
        max_total_tokens=settings.max_request_tokens,
    )
    batch = await run_guarded(
        guard,
        served,
        len(job.inputs),
        lambda: served.engine.classify(job.inputs, options, activation=job.activation),
    )
    if not np.isfinite(batch.scores).all():
        raise APIError(ErrorKind.ENGINE_FAILURE, "the engine produced a non-finite label score")
    guard.timing.tokenization_s = batch.tokenization_s
    guard.note(tokens=batch.total_tokens)
    return batch
