"""Feed the engine: token-budgeted batches, several in flight, results committed in row order.

The engine (vLLM's AsyncLLM) batches the prompts of every call in flight into its own steps of
`max_num_batched_tokens`; what it must never do is wait. So the next batches are tokenized and
queued while the current ones run: `inflight` calls at once, each about `batch_tokens` tokens.
Batches are cut by an estimate of their tokens (characters per token, learnt from the token
counts the engine reports), because the exact count is known only once the engine has
tokenized them.

Results are committed strictly in row order (a finished batch waits for the ones before it),
which is what makes resuming a single number: the rows committed so far.

Each output asked for (dense, sparse, token vectors) is one engine call per batch, over the
same prompts and options, so all of a document's outputs are computed from the same text.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import EngineError, SparseVector
from gateway.bulk import BulkError
from gateway.bulk.sources import DocumentId, Record
from gateway.config import Settings
from gateway.errors import APIError
from gateway.http.tracing import Tracing, annotate, chunk
from gateway.serving.encoding import truncate_dimensions
from gateway.serving.inputs import Truncation, engine_call
from gateway.serving.registry import ServedModel
from gateway.serving.token_ids import Cl100kDecoder


@dataclass(frozen=True)
class Job:
    """What to embed each text with: the same meaning as the embeddings API's fields."""

    served: ServedModel
    name: str  # the model name as given: a virtual name applies its prompt
    input_type: str | None = None
    length: Truncation = Truncation()
    dimensions: int | None = None
    batch_tokens: int = 16384
    max_batch_documents: int = 1024
    inflight: int = 4
    # Which of dense, sparse, multivector to compute for each text.
    outputs: tuple[str, ...] = ("dense",)
    # The server's limits (characters per input and per request) apply here too.
    settings: Settings = field(default_factory=Settings)
    tracing: Tracing | None = None


@dataclass(frozen=True)
class Batch:
    start: int  # row number of the first document
    ids: list[DocumentId]
    texts: list[str]


@dataclass(frozen=True)
class Result:
    """A batch's outputs, those asked for; `tokens`: its prompts' tokens, counted once."""

    batch: Batch
    vectors: npt.NDArray[np.float32] | None
    tokens: int
    sparse: list[SparseVector] | None = None
    multivector: list[npt.NDArray[np.float32]] | None = None


class TokenEstimate:
    """Tokens of a text from its length, at the characters per token seen so far."""

    def __init__(self, chars_per_token: float = 4.0) -> None:
        self.chars, self.tokens = chars_per_token * 100, 100.0

    def __call__(self, text: str) -> float:
        return len(text) * self.tokens / self.chars + 2  # + the special tokens

    def learn(self, texts: Iterable[str], tokens: int) -> None:
        self.chars += sum(map(len, texts))
        self.tokens += tokens


def batches(
    records: Iterable[Record],
    start: int,
    *,
    budget: int,
    max_documents: int,
    estimate: Callable[[str], float],
) -> Iterator[Batch]:
    """Consecutive batches of about `budget` estimated tokens (at least one document each)."""
    ids: list[DocumentId] = []
    texts: list[str] = []
    used = 0.0
    for doc_id, text in records:
        cost = estimate(text)
        if texts and (used + cost > budget or len(texts) >= max_documents):
            yield Batch(start, ids, texts)
            start, ids, texts, used = start + len(texts), [], [], 0.0
        ids.append(doc_id)
        texts.append(text)
        used += cost
    if texts:
        yield Batch(start, ids, texts)


async def run(
    job: Job, records: Iterable[Record], start: int, commit: Callable[[Result], Any]
) -> None:
    """Embed every record and hand each batch's result to `commit` (in a thread, since it
    writes and fsyncs files), in row order. On any error, or when cancelled, the batches in
    flight are cancelled (which aborts their engine work) and nothing after the last commit
    is kept."""
    estimate = TokenEstimate()
    decoder = Cl100kDecoder()  # never used: bulk inputs are texts; engine_call wants one
    pending: deque[asyncio.Task[Result]] = deque()

    async def commit_first() -> None:
        result = await pending[0]
        pending.popleft()
        estimate.learn(result.batch.texts, result.tokens)
        await asyncio.to_thread(commit, result)

    try:
        for batch in batches(
            records,
            start,
            budget=job.batch_tokens,
            max_documents=job.max_batch_documents,
            estimate=estimate,
        ):
            while len(pending) >= job.inflight:
                await commit_first()
            pending.append(asyncio.create_task(_embed(job, batch, decoder)))
        while pending:
            await commit_first()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _embed(job: Job, batch: Batch, decoder: Cl100kDecoder) -> Result:
    size = len(batch.ids)
    with chunk(job.tracing, "bulk chunk", first_row=batch.start, documents=size) as span:
        result = await _embed_batch(job, batch, decoder)
        annotate(span, tokens=result.tokens)
    return result


async def _embed_batch(job: Job, batch: Batch, decoder: Cl100kDecoder) -> Result:
    engine = job.served.engine
    vectors = sparse = multivector = None
    tokens = 0
    try:
        call = await engine_call(
            job.served, job.name, batch.texts, job.input_type, job.length, decoder, job.settings
        )
        if "dense" in job.outputs:
            embedded = await engine.embed(call.prompts, call.options)
            vectors, tokens = embedded.vectors, embedded.total_tokens
        if "sparse" in job.outputs:
            weights = await engine.embed_sparse(call.prompts, call.options)
            sparse, tokens = weights.vectors, weights.total_tokens
        if "multivector" in job.outputs:
            per_token = await engine.embed_tokens(call.prompts, call.options)
            multivector, tokens = per_token.matrices, per_token.total_tokens
    except EngineError as exc:
        # The engine speaks of its call's inputs and the API's fields; say it in rows and flags.
        message = re.sub(r"^input \d+ ", "it ", exc.message).replace(
            'send "truncate": "end"', "pass --truncate end"
        )
        raise BulkError(_where(batch, exc.index) + message) from exc
    except APIError as exc:
        raise BulkError(_where(batch, None) + exc.message) from exc
    if vectors is not None:
        vectors = np.asarray(truncate_dimensions(vectors, job.dimensions), dtype=np.float32)
    result = Result(batch, vectors, tokens, sparse, multivector)
    # As the API refuses to answer one (gateway.encoding.refuse_non_finite), never store one.
    bad = _first_non_finite(result)
    if bad is not None:
        raise BulkError(_where(batch, bad) + "the engine produced a non-finite vector")
    return result


def _first_non_finite(result: Result) -> int | None:
    """The first document with a value that is not finite in any of its outputs."""
    for i in range(len(result.batch.ids)):
        parts = [
            *([result.vectors[i]] if result.vectors is not None else []),
            *([result.sparse[i].values] if result.sparse is not None else []),
            *([result.multivector[i]] if result.multivector is not None else []),
        ]
        if not all(np.isfinite(part).all() for part in parts):
            return i
    return None


def _where(batch: Batch, index: int | None) -> str:
    if index is None or not 0 <= index < len(batch.ids):
        return f"documents {batch.start}-{batch.start + len(batch.ids) - 1}: "
    return f"document {batch.start + index} (id {batch.ids[index]!r}): "
