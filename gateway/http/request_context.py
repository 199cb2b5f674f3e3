"""The outermost middleware: request ids, timings, one log line per request, the request's
metrics, and the one catch-all for unexpected errors.

Each request gets an id (the client's `x-request-id` when it is a short token, else a new
one), returned in the `x-request-id` header, set in the logging context variable (so every
line logged while serving the request carries it) and written in its log line with the route,
model, status, input and token counts and timings. Request bodies and headers (so API keys)
are never logged. An exception nothing else handled becomes a 500 that says nothing internal
but the request id; the traceback goes to the log.

Successful requests that reached an engine also answer with TEI's timing headers, in whole
milliseconds: `x-queue-time` (arrival to the engine call: reading, validation, admission),
`x-tokenization-time` and `x-inference-time` (the engine call, split by what the engine
measured as tokenizing), and `x-total-time` (arrival to the response), which is never less
than the other three together.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response
from gateway.http.drain import PROBES
from gateway.http.logs import REQUEST_ID

log = logging.getLogger("gateway.access")
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_NOTES = "gateway.notes"
_TIMING = "gateway.timing"


@dataclass
class Timing:
    """Where a request's time went (seconds; None for phases it did not reach)."""

    started: float
    queue_s: float | None = None
    engine_s: float | None = None
    tokenization_s: float = 0.0

    @property
    def inference_s(self) -> float | None:
        if self.engine_s is None:
            return None
        return max(self.engine_s - self.tokenization_s, 0.0)

    def headers(self, total_s: float) -> list[tuple[bytes, bytes]]:
        if self.queue_s is None or self.inference_s is None:
            return []
        # Whole milliseconds as TEI sends them, rounded down: the parts never exceed the total.
        parts = (
            ("queue", self.queue_s),
            ("tokenization", self.tokenization_s),
            ("inference", self.inference_s),
            ("total", total_s),
        )
        return [(f"x-{name}-time".encode(), str(int(s * 1000)).encode()) for name, s in parts]


class RequestObserver(Protocol):
    """What the middleware reports each finished request to (the metrics)."""

    def observe_request(
        self, scope: Scope, status: int, seconds: float, notes: dict[str, Any], timing: Timing
    ) -> None: ...


def note(request: Request[Any], **fields: Any) -> None:
    """Add fields (model, inputs, tokens, ...) to this request's log line."""
    log_fields(request).update(fields)


def log_fields(request: Request[Any]) -> dict[str, Any]:
    """The fields of this request's log line, to add to."""
    fields: dict[str, Any] = request.scope.setdefault(_NOTES, {})
    return fields


def notes_of(scope: Scope) -> dict[str, Any]:
    """The fields noted so far (the batch runner reads a line's `tokens` here)."""
    notes: dict[str, Any] = scope.get(_NOTES, {})
    return notes


def timing(request: Request[Any]) -> Timing:
    """This request's timing record (the engine call and the routes fill it in)."""
    record = request.scope.get(_TIMING)
    if record is None:  # a request that did not pass the middleware (unit tests)
        record = request.scope[_TIMING] = Timing(time.perf_counter())
    return record


async def disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (called after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        record = scope[_TIMING] = Timing(started)
        token = REQUEST_ID.set(request_id.decode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                # Timings on successes only, as TEI: an error's split says nothing useful.
                timings = record.headers(time.perf_counter() - started) if status < 400 else []
                message["headers"] = [*message["headers"], (b"x-request-id", request_id), *timings]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error, request %s", request_id.decode())
            if status == 0:
                error = APIError(
                    ErrorKind.INTERNAL, f"internal server error (request id {request_id.decode()})"
                )
                await error_response(error, scope)(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            _log_line(scope, request_id, status, seconds, record)
            if self.observer is not None:
                self.observer.observe_request(
                    scope, status or 500, seconds, scope.get(_NOTES, {}), record
                )
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _CLIENT_ID.fullmatch(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


def _log_line(scope: Scope, request_id: bytes, status: int, seconds: float, record: Timing) -> None:
    if scope["path"] in PROBES and status < 400:
        level = logging.DEBUG  # probes every few seconds would drown the log
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    notes = dict(scope.get(_NOTES, {}))
    if record.queue_s is not None and record.inference_s is not None:
        notes.update(
            queue_ms=round(record.queue_s * 1000, 1),
            tokenization_ms=round(record.tokenization_s * 1000, 1),
            inference_ms=round(record.inference_s * 1000, 1),
        )
    extra = " ".join(f"{key}={value}" for key, value in notes.items())
    # The same fields as JSON keys for the JSON format (the text format shows the message).
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "status": status or 500,
        "duration_ms": round(seconds * 1000, 1),
        **notes,
    }
    log.log(
        level,
        "request_id=%s method=%s path=%r status=%d ms=%.1f %s",
        request_id.decode(),
        scope["method"],
        scope["path"],
        status or 500,
        seconds * 1000,
        extra,
        extra=fields,
    )
