"""Bounded admission: `Admission` counts inputs in flight per model (work, not requests: one
2048-input batch weighs 2048 single-text requests; per model, so a hung engine cannot starve
the others). Past the bound a request is refused at once with 429 and `Retry-After` instead of
queueing. The guarded engine call that admits its work is `gateway.serving.guard.run_guarded`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.errors import APIError, ErrorKind


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
