"""Graceful drain on SIGTERM or SIGINT, all of it: the state, the gate that refuses new
requests, the server that waits for in-flight ones, and the answer once the grace is over.

While draining, /ready turns 503 and new requests other than the probes are refused with 503
and `Retry-After`, while the listener stays open (so load balancers see the 503s rather than
connection errors); the process exits 0 once in-flight requests have finished or the grace
period has passed. Requests still waiting on an engine when the grace runs out answer 503
(`Drain.expired`, watched by `admission.run_guarded`). A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response

log = logging.getLogger("gateway")
# Probes keep answering during a drain: /ready must be able to say 503, and Prometheus
# scrapes the draining worker's last numbers. Successful ones are logged at debug.
PROBES = frozenset({"/health", "/ready", "/metrics"})


@dataclass
class Drain:
    """Whether the server is draining, and how many requests are in flight."""

    draining: bool = False
    started_at: float | None = None
    inflight: int = 0
    # Set when the grace period is over: requests still waiting on an engine give up (503).
    expired: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        if not self.draining:
            self.draining, self.started_at = True, time.monotonic()


def refused() -> APIError:
    """The answer to a new request while draining."""
    return APIError(
        ErrorKind.UNAVAILABLE,
        "the server is shutting down; retry on another instance",
        code="draining",
        headers={"Retry-After": "5"},
    )


def grace_expired() -> APIError:
    """The answer to a request whose engine work was cut off by the end of the grace."""
    return APIError(
        ErrorKind.UNAVAILABLE,
        "the server shut down before the engine answered; retry on another instance",
        code="draining",
        headers={"Retry-After": "5"},
    )


class DrainGateMiddleware:
    """Counts requests in flight (the server exits when none are left) and refuses new ones
    while draining; the probes are neither counted nor refused."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await error_response(refused(), scope, close=True)(scope, receive, send)
            return
        self.drain.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.inflight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn, draining on the first SIGTERM or SIGINT for up to `grace_s` seconds."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling super(): uvicorn would re-raise the signal after shutdown, and the
        # process would end by SIGTERM instead of exiting 0.
        if self.drain.draining:
            self.should_exit = True
            return
        log.info(
            "signal %d: draining (%d requests in flight, grace %g s)",
            sig,
            self.drain.inflight,
            self.grace_s,
        )
        self.drain.begin()

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain
        if drain.draining and not self.should_exit:
            waited = time.monotonic() - (drain.started_at or 0.0)
            if waited >= self.grace_s and not drain.expired.is_set():
                # Requests still waiting on an engine answer 503 now, rather than being cut.
                log.warning(
                    "drain grace of %g s is over: aborting %d requests",
                    self.grace_s,
                    drain.inflight,
                )
                drain.expired.set()
            if drain.inflight == 0 or waited >= self.grace_s + 1:
                log.info(
                    "drained after %.2f s (%d requests still in flight)", waited, drain.inflight
                )
                self.should_exit = True
        return await super().on_tick(counter)
