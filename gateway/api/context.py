"""What a handler hands the serving layer from its request: the `Guard` of the request (its
state's admission, settings, drain and decoder, its disconnect watch, timings and log fields),
the model a body names (or the default model when it names none), and the guarded calls the
other servers' dialects share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from gateway.http.request_context import disconnected, log_fields, timing
from gateway.serving.guard import Guard, run_guarded
from gateway.serving.ranking import Ranking, RankJob, rank
from gateway.serving.registry import ServedModel
from gateway.state import GatewayRequest, registry_of

T = TypeVar("T")


def guard_of(request: GatewayRequest) -> Guard:
    """The request's guard: the app's (or a batch's) bounds, and the request's own watch and
    records."""
    state = request.state
    return Guard(
        admission=state["admission"],
        registry=state["registry"],
        drain=state["drain"],
        settings=state["settings"],
        decoder=state["cl100k"],
        timing=timing(request),
        disconnected=partial(disconnected, request.receive),
        notes=log_fields(request),
    )


def model_of(request: GatewayRequest, name: str | None, *, scoring: bool = False) -> ServedModel:
    """The model `name` names, or (no `model` field: the TEI, vLLM and `/embed` texts routes)
    the default model, a scoring one for `scoring` routes."""
    registry = registry_of(request)
    return registry.resolve(name) if name is not None else registry.default_model(scoring=scoring)


async def guarded(
    request: GatewayRequest, served: ServedModel, inputs: int, call: Callable[[], Awaitable[T]]
) -> T:
    """`call()` (engine work other than embedding and ranking: tokenize, detokenize) under
    the request's guard, noted in its log line."""
    guard = guard_of(request)
    guard.note(model=served.name, inputs=inputs)
    return await run_guarded(guard, served, inputs, call)


async def rank_texts(
    request: GatewayRequest,
    served: ServedModel,
    query: str,
    texts: list[str],
    activation: bool | None,
    mode: str | None = None,
    weights: tuple[float, ...] | None = None,
) -> Ranking:
    """`texts` ranked for `query` with the rerank routes' chunking and scoring (TEI's rerank,
    vLLM's scores), in `mode` with `weights` for a model that ranks by its own outputs."""
    guard = guard_of(request)
    guard.note(model=served.name, inputs=len(texts))
    job = RankJob(served, query, texts, activation=activation, mode=mode, weights=weights)
    return await rank(job, guard)
