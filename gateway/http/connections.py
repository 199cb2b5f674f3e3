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
- a cap on open connections (`max_connections`): a request on a connection past it gets 503
  in the OpenAI envelope with `Retry-After` and `Connection: close`, at once.

The keep-alive timeout between requests is uvicorn's own (`timeout_keep_alive`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import APIError, ErrorKind, error_response

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\nconnection: close\r\ncontent-length: 36\r\n\r\n"
    b"request line and headers are too big"
)


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024


def protocol_class(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)` for these limits."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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
        if len(self.connections) <= self.limits.max_connections:
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
