"""The guarded engine call every route makes: `run_guarded` admits the work, runs it, and
ends it early, aborting it, when the client disconnects, the request timeout passes, the model
is taken out of service (engine died or hung), or a SIGTERM drain runs out of grace.

A `Guard` holds what that watches and where it reports, taken from the request being served
(`gateway.api.context.guard_of`) or, for a batch line, from the batch's own bounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters.base import EngineError, EngineUnavailable
from gateway.config import Settings
from gateway.errors import APIError, ErrorKind, from_engine_error
from gateway.http.drain import Drain, grace_expired
from gateway.http.request_context import Timing
from gateway.serving.admission import Admission, Counters
from gateway.serving.registry import ModelRegistry, ServedModel
from gateway.serving.token_ids import Cl100kDecoder

T = TypeVar("T")


@dataclass(frozen=True)
class Guard:
    """One request's bounds and records: its admission bound, settings (limits and timeout),
    drain and disconnect watch, the cl100k decoder for token-id inputs, and where its timings
    and log fields go."""

    admission: Admission
    registry: ModelRegistry
    drain: Drain
    settings: Settings
    decoder: Cl100kDecoder
    timing: Timing
    # Returns once the client has gone away.
    disconnected: Callable[[], Awaitable[None]]
    notes: dict[str, Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        """Add fields (model, inputs, tokens, ...) to the request's log line."""
        self.notes.update(fields)


async def run_guarded(
    guard: Guard, served: ServedModel, inputs: int, call: Callable[[], Awaitable[T]]
) -> T:
    """Admit `inputs` inputs, run `call()` (the engine work) and return its result, or raise
    the APIError for whichever comes first: engine error, model out of service, timeout,
    client gone. In the last three cases the engine work is cancelled, which aborts it."""
    admission = guard.admission
    record = guard.timing
    with admission.admit(served.name, inputs):
        began = time.perf_counter()
        record.queue_s = began - record.started
        work = asyncio.ensure_future(call())
        gone = asyncio.ensure_future(guard.disconnected())
        down = asyncio.ensure_future(served.down.wait())
        expired = asyncio.ensure_future(guard.drain.expired.wait())
        try:
            await asyncio.wait(
                {work, gone, down, expired},
                timeout=guard.settings.request_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for watcher in (gone, down, expired):
                watcher.cancel()
            if not work.done():
                work.cancel()
                # Let the engine finish aborting before answering (bounded, never hangs).
                await asyncio.wait({work}, timeout=5)
            record.engine_s = time.perf_counter() - began
        return _outcome(guard, served, work, gone, admission.counters)


def _outcome(
    guard: Guard,
    served: ServedModel,
    work: asyncio.Future[T],
    gone: asyncio.Future[None],
    counters: Counters,
) -> T:
    if work.done() and not work.cancelled():
        try:
            return work.result()
        except EngineError as exc:
            if isinstance(exc, EngineUnavailable):
                guard.registry.mark_down(served, exc.message)
            raise from_engine_error(exc) from exc
    if served.down.is_set():
        counters.engine_down += 1
        # Not `served.failure`: the reason is logged, and may name server paths.
        raise APIError(
            ErrorKind.UNAVAILABLE,
            f"model '{served.name}' went out of service while "
            "serving this request (its engine stopped or hung) and is being "
            "restarted; retry shortly",
            headers={"Retry-After": "10"},
        )
    if guard.drain.expired.is_set():
        raise grace_expired()
    if gone.done() and not gone.cancelled():
        counters.disconnects += 1
        raise APIError(ErrorKind.CLIENT_CLOSED, "the client closed the connection")
    counters.timeouts += 1
    timeout = guard.settings.request_timeout_s
    raise APIError(
        ErrorKind.TIMEOUT, f"the engine did not answer within {timeout:g} s; the work was aborted"
    )
