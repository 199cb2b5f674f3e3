"""Embedding: a job's inputs made prompts and embedded under the request's guard. Every route
that embeds (OpenAI, Cohere, TEI, the `/embed` texts route, TEI similarity) calls `embed`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from adapters.base import EmbeddingBatch
from gateway.serving.guard import Guard, run_guarded
from gateway.serving.inputs import Inputs, Truncation, engine_call
from gateway.serving.registry import ServedModel


@dataclass(frozen=True)
class EmbedJob:
    """What to embed: `inputs` (checked against the limits when parsed) for `served`, asked
    for by `name` (a virtual model name applies its prompt), with the request's `input_type`
    and truncation; `normalize=False` asks for the model's vectors before its normalisation
    (TEI)."""

    served: ServedModel
    name: str
    inputs: Inputs
    input_type: str | None = None
    truncation: Truncation = Truncation()
    normalize: bool = True


async def embed(job: EmbedJob, guard: Guard) -> EmbeddingBatch:
    """The job's vectors, embedded under admission control, the request timeout and
    disconnect and fault watch (`run_guarded`)."""
    served, settings = job.served, guard.settings
    guard.note(model=served.name, inputs=len(job.inputs))
    call = await engine_call(
        served, job.name, job.inputs, job.input_type, job.truncation, guard.decoder, settings
    )
    options = replace(
        call.options, max_total_tokens=settings.max_request_tokens, normalize=job.normalize
    )
    batch = await run_guarded(
        guard, served, len(job.inputs), lambda: served.engine.embed(call.prompts, options)
    )
    guard.timing.tokenization_s = batch.tokenization_s
    guard.note(tokens=batch.total_tokens)
    return batch
