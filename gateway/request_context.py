"""The outermost middleware: request ids, one log line per request, and the one catch-all
for unexpected errors.

Each request gets an id (the client's `x-request-id` when it is a short token, else a new
one), returned in the `x-request-id` header and written in its log line with the route,
model, status, input and token counts and timings. Request bodies and headers (so API keys)
are never logged. An exception nothing else handled becomes a 500 that says nothing internal
but the request id; the traceback goes to the log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.drain import PROBES
from gateway.errors import APIError, ErrorKind, error_response

log = logging.getLogger("gateway.access")
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_NOTES = "gateway.notes"


def note(request: Request, **fields: Any) -> None:
    """Add fields (model, inputs, tokens, ...) to this request's log line."""
    request.scope.setdefault(_NOTES, {}).update(fields)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error, request %s", request_id.decode())
            if status == 0:
                error = APIError(ErrorKind.INTERNAL, "internal server error (request id "
                                 f"{request_id.decode()})")
                await error_response(error, scope)(scope, receive, send_with_id)
        finally:
            _log_line(scope, request_id, status, time.perf_counter() - started)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _CLIENT_ID.fullmatch(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


def _log_line(scope: Scope, request_id: bytes, status: int, seconds: float) -> None:
    if scope["path"] in PROBES and status < 400:
        level = logging.DEBUG  # probes every few seconds would drown the log
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    notes = scope.get(_NOTES, {})
    extra = " ".join(f"{key}={value}" for key, value in notes.items())
    log.log(level, "request_id=%s method=%s path=%r status=%d ms=%.1f %s",
            request_id.decode(), scope["method"], scope["path"], status or 500,
            seconds * 1000, extra)
