"""Bounded admission and the guarded engine call every route makes.

`Admission` counts inputs in flight per model (work, not requests: one 2048-input batch
weighs 2048 single-text requests; per model, so a hung engine cannot starve the others).
Past the bound a request is refused at once with 429 and `Retry-After` instead of queueing.
`run_guarded` then runs the engine work and ends it early, aborting it, when the client
disconnects, the request timeout passes, the model is taken out of service (engine died or
hung), or a SIGTERM drain runs out of grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from starlette.types import Receive

from adapters.base import EngineError, EngineUnavailable
from gateway.drain import grace_expired
from gateway.errors import APIError, ErrorKind, from_engine_error
from gateway.registry import ServedModel
from gateway.request_context import timing
from gateway.state import GatewayRequest

T = TypeVar("T")


@dataclass
class Counters:
    """What the guard did, for tests, the battery and the logs."""

    rejected: int = 0  # 429: over the admission bound
    timeouts: int = 0  # 504: engine work aborted after request_timeout_s
    disconnects: int = 0  # engine work aborted because the client went away
    engine_down: int = 0  # 503: the model went out of service while the request waited


class Admission:
    """At most `limit` inputs in flight per model; a request bigger than the limit still
    runs, alone."""

    def __init__(self, limit: int, on_change: Callable[[str, int], None] | None = None) -> None:
        self.limit = limit
        self._inflight: dict[str, int] = {}
        self.counters = Counters()
        self.last_admitted = float("-inf")  # when work was last admitted (the batch pacer)
        # Told (model, inputs in flight) on every change: the metrics' autoscaling gauge.
        self._on_change = on_change or (lambda model, inflight: None)
        # Told of every change too: the batch pacer, which starts batch work once nothing
        # interactive is in flight.
        self._listeners: list[Callable[[], None]] = []

    @property
    def inflight(self) -> int:
        return sum(self._inflight.values())

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change of the inputs in flight."""
        self._listeners.append(listener)

    def _changed(self, model: str) -> None:
        self._on_change(model, self._inflight[model])
        for listener in self._listeners:
            listener()

    @contextlib.contextmanager
    def admit(self, model: str, inputs: int) -> Iterator[None]:
        busy = self._inflight.get(model, 0)
        if busy and busy + inputs > self.limit:
            self.counters.rejected += 1
            raise APIError(
                ErrorKind.RATE_LIMITED,
                f"model '{model}' is at capacity ({busy} inputs in flight, limit "
                f"{self.limit}); retry shortly",
                headers={"Retry-After": "1"},
            )
        self._inflight[model] = busy + inputs
        self.last_admitted = time.monotonic()
        self._changed(model)
        try:
            yield
        finally:
            self._inflight[model] -= inputs
            self._changed(model)


async def run_guarded(
    request: GatewayRequest, served: ServedModel, inputs: int, call: Callable[[], Awaitable[T]]
) -> T:
    """Admit `inputs` inputs, run `call()` (the engine work) and return its result, or raise
    the APIError for whichever comes first: engine error, model out of service, timeout,
    client gone. In the last three cases the engine work is cancelled, which aborts it."""
    state = request.state
    admission = state["admission"]
    record = timing(request)
    with admission.admit(served.name, inputs):
        began = time.perf_counter()
        record.queue_s = began - record.started
        work = asyncio.ensure_future(call())
        gone = asyncio.ensure_future(_disconnected(request.receive))
        down = asyncio.ensure_future(served.down.wait())
        expired = asyncio.ensure_future(state["drain"].expired.wait())
        try:
            await asyncio.wait(
                {work, gone, down, expired},
                timeout=state["settings"].request_timeout_s,
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
        return _outcome(request, served, work, gone, admission.counters)


def _outcome(
    request: GatewayRequest,
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
                request.state["registry"].mark_down(served, exc.message)
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
    if request.state["drain"].expired.is_set():
        raise grace_expired()
    if gone.done() and not gone.cancelled():
        counters.disconnects += 1
        raise APIError(ErrorKind.CLIENT_CLOSED, "the client closed the connection")
    counters.timeouts += 1
    timeout = request.state["settings"].request_timeout_s
    raise APIError(
        ErrorKind.TIMEOUT, f"the engine did not answer within {timeout:g} s; the work was aborted"
    )


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (called after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
