"""Bounded connections: uvicorn's httptools protocol plus the limits it lacks.

uvicorn's fast parser (httptools) reads a request's headers without any size limit or
deadline, so one client can make the server buffer megabytes of header, or hold thousands of
connections open with half a request line each. Its h11 parser has a size limit but no
deadline either, and costs more CPU per request. This subclass keeps httptools and adds:

- a cap on the bytes of a request line and headers (`max_header_bytes`): past it, 431 and
  the connection closed, with at most one read (256 KiB) more held;
- a deadline for a request's line and headers (`header_timeout_s`, from the connection or
  from the request's first byte) and for a stalled body (`body_timeout_s` without a byte):
  past it the connection is closed (a handler still reading the body sees a disconnect);
- a cap on open connections (`max_connections`, by default the process's open-files limit
  less a reserve, `default_max_connections`). A connection past the cap first makes room by
  closing the connection that has waited longest for a request head: one that has sent
  nothing yet, half a request line, or is idle between kept-alive requests (as nginx reuses
  idle connections when it runs out). Connections with a request in flight are never
  closed for room, so thousands of half-open connections cannot keep a real request out.
  Only when every connection has a request in flight does a request past the cap get 503 in
  the OpenAI envelope with `Retry-After` and `Connection: close`, at once; the probes
  (`/health`, `/ready`) are served even then, so that a flood of connections does not get a
  healthy process restarted by its liveness probe.

The keep-alive timeout between requests is uvicorn's own (`timeout_keep_alive`).
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import APIError, ErrorKind, error_response

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\nconnection: close\r\ncontent-length: 36\r\n\r\n"
    b"request line and headers are too big"
)


# Served past the connection cap: a liveness or readiness probe that failed for want of a
# slot would restart (or unlist) a process that is only busy.
PROBE_PATHS = (b"/health", b"/ready")
# Open files kept for everything but client connections: engines, logs, the batch store,
# uploads, tokenizer and model files.
FD_RESERVE = 256


def default_max_connections(open_files: int | None = None) -> int:
    """The open-files limit (RLIMIT_NOFILE's soft limit, or `open_files`) less FD_RESERVE:
    past it `accept()` would fail, and the process could not open a file either."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if open_files == resource.RLIM_INFINITY:
            open_files = 1 << 20
    return max(open_files - FD_RESERVE, 16)


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024


def protocol_class(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)` for these limits (one per
    server: its connections waiting for a request head are tracked per class)."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"limits": limits, "waiting": OrderedDict(), "closing": set()},
    )


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    error = APIError(
        ErrorKind.UNAVAILABLE,
        "the server has too many open connections; retry shortly",
        code="too_many_connections",
        headers={"Retry-After": "1"},
    )
    await error_response(error, scope, close=True)(scope, receive, send)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, header and body deadlines and a
    connection cap (see the module docstring)."""

    limits = ConnectionLimits()
    # The server's connections that have no request in flight (no head yet, half a head, or
    # idle between requests), longest waiting first: the ones closed to make room.
    waiting: ClassVar[OrderedDict[BoundedHttpToolsProtocol, None]] = OrderedDict()
    # Closed for room but not gone yet (they leave `connections` at `connection_lost`): not
    # counted again, or a burst of new connections would close more than it needs.
    closing: ClassVar[set[BoundedHttpToolsProtocol]] = set()

    # `_header_bytes` counts the current request's line and headers until they are complete
    # (None afterwards); `_in_body` is True while a body is still arriving; one timer serves
    # the header and body deadlines.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_bytes: int | None = 0
        self._in_body = False
        self._last_body = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._headers_late)
        self._make_room()
        self.waiting[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.waiting.pop(self, None)
        self.closing.discard(self)
        super().connection_lost(exc)

    def _make_room(self) -> None:
        """Past the cap, close connections that wait for a request head, longest first."""
        while len(self.connections) - len(self.closing) > self.limits.max_connections:
            if not self.waiting:
                return
            oldest, _ = self.waiting.popitem(last=False)
            self.closing.add(oldest)
            oldest.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_bytes is not None:  # still inside a request's line and headers
            self._header_bytes += len(data)
            if (
                self._header_bytes > self.limits.max_header_bytes
                and not self.transport.is_closing()
            ):
                self.logger.warning(
                    "request headers over %d bytes: 431, connection closed",
                    self.limits.max_header_bytes,
                )
                self.transport.write(_431)
                self.transport.close()
        elif self._in_body and self._deadline is None:
            self._last_body = self.loop.time()
            self._arm(self.limits.body_timeout_s, self._body_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self.limits.header_timeout_s, self._headers_late)

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        self._in_body = True
        self._disarm()
        self.waiting.pop(self, None)  # a request in flight: never closed for room
        if (
            len(self.connections) - len(self.closing) <= self.limits.max_connections
            or self.url.split(b"?", 1)[0] in PROBE_PATHS
        ):
            super().on_headers_complete()
            return
        app, self.app = self.app, _too_many_connections
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.waiting[self] = None  # idle until its next request, newest of the waiting

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], object]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self._header_bytes is not None and not self.transport.is_closing():
            self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if not self._in_body or self.transport.is_closing():
            return
        idle = self.loop.time() - self._last_body
        if idle < self.limits.body_timeout_s:  # bytes came meanwhile: wait the rest
            self._arm(self.limits.body_timeout_s - idle, self._body_late)
            return
        self.logger.warning(
            "request body stalled for %g s: connection closed", self.limits.body_timeout_s
        )
        self.transport.close()
