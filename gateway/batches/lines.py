"""One batch input line answered as its endpoint's route answers a body, and its output or
error line.

A line `{"custom_id", "method", "url", "body"}` is answered by the function that answers the
route `url` (`answer_embeddings`, `answer_rerank`): the same parsing, limits, model lookup,
prompt building, guarded engine call and encoding as over HTTP, the same body bytes, and the
same error envelope. Only the admission and the timeout differ: batch lines count against the
batch's own count (the `admission` of `BatchApp.state`), never against interactive requests'
bound, and have no request timeout (no client waits on them; a paced line may wait long under
interactive traffic; the runner ends them on cancel, expiry and shutdown, the watchdog when
the engine hangs).

Output and error lines have OpenAI's shapes:
    {"id": "batch_req_..", "custom_id": "..", "response": {"status_code": 200,
     "request_id": "..", "body": {...}}, "error": null}
    {"id": "batch_req_..", "custom_id": "..", "response": null,
     "error": {"code": "invalid_json", "message": ".."}}      (a line that could not be sent)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.responses import Response

from gateway.api.openai import answer_embeddings
from gateway.api.rerank import answer_rerank
from gateway.errors import APIError, ErrorKind, brief, error_response
from gateway.http.request_context import Timing
from gateway.http.responses import json_response
from gateway.serving.admission import Admission
from gateway.serving.guard import Guard
from gateway.state import GatewayState

log = logging.getLogger(__name__)
# Answers that say "not now": the line waits and is sent again (a model still loading, the
# batch share full, an overloaded engine), until the batch is cancelled or expires.
_RETRY_STATUSES = {429: 0.01, 503: 0.5}
_MAX_RETRY_DELAY_S = 5.0
_LINE_TIMEOUT_S = 24 * 3600.0  # a batch's whole window: in effect none
_PARSE_INLINE_BYTES = 64 * 1024  # about 0.1 ms of JSON work


async def _no_headers(
    answer: Callable[[Any, Guard], Awaitable[Any]], body: Any, guard: Guard
) -> tuple[Any, dict[str, str]]:
    return await answer(body, guard), {}


# How the route of each batch endpoint answers a body: (body, headers).
Endpoint = Callable[[Any, Guard], Awaitable[tuple[Any, dict[str, str]]]]
_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/embeddings": answer_embeddings,
    "/v1/rerank": partial(_no_headers, answer_rerank),
}


class BatchApp:
    """What a batch line is served with: the app's state with the batch's own admission
    bound in place of the interactive one, and no request timeout."""

    def __init__(self, app: Starlette, admission: Admission) -> None:
        gateway: GatewayState = app.state.gateway
        settings = replace(gateway["settings"], request_timeout_s=_LINE_TIMEOUT_S)
        self.state: GatewayState = {**gateway, "admission": admission, "settings": settings}

    def guard(self) -> Guard:
        """A line's guard: no client to go away, its own timings and log fields."""
        state = self.state
        return Guard(
            admission=state["admission"],
            registry=state["registry"],
            drain=state["drain"],
            settings=state["settings"],
            decoder=state["cl100k"],
            timing=Timing(time.perf_counter()),
            disconnected=_never,
        )


def endpoint_for(app: BatchApp, path: str) -> Endpoint:
    """The function that answers `POST path`'s bodies."""
    try:
        return _ENDPOINTS[path]
    except KeyError:
        raise LookupError(f"no POST route for {path}") from None


@dataclass(frozen=True)
class LineResult:
    """A line's outcome: the output (`ok`) or error line to write, and the tokens its
    request consumed (the route's count, as in its `usage`; 0 unless it succeeded)."""

    ok: bool
    line: bytes
    tokens: int = 0
    custom_id: str | None = None


@dataclass(frozen=True)
class _Refused:
    code: str
    message: str
    custom_id: str | None = None


async def run_line(
    app: BatchApp, endpoint: str, call: Endpoint, raw: bytes, number: int
) -> LineResult:
    """The result of input line `number`."""
    request_id = f"batch_req_{uuid.uuid4().hex}"
    # A line may be as large as a request body: parsed in a thread when large.
    if len(raw) > _PARSE_INLINE_BYTES:
        checked = await asyncio.to_thread(_checked_line, raw, number, endpoint)
    else:
        checked = _checked_line(raw, number, endpoint)
    if isinstance(checked, _Refused):
        line = _failure(request_id, checked.custom_id, checked.code, checked.message)
        return LineResult(False, line, custom_id=checked.custom_id)
    custom_id, body = checked
    status, answer, tokens = await _call_until_accepted(app, endpoint, call, body)
    response = (
        b'{"status_code":%d,"request_id":"%s","body":' % (status, request_id.encode())
        + answer
        + b"}"
    )
    ok = status == 200
    output = (
        b'{"id":"%s","custom_id":' % request_id.encode()
        + orjson.dumps(custom_id)
        + b',"response":'
        + response
        + b',"error":null}\n'
    )
    return LineResult(ok, output, tokens if ok else 0, custom_id)


def _checked_line(raw: bytes, number: int, endpoint: str) -> tuple[str, dict[str, Any]] | _Refused:
    """(custom_id, request body) of a well-formed line, or why it cannot be sent."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Refused("invalid_json", f"line {number} is not valid JSON: {exc}")
    if not isinstance(line, dict):
        return _Refused("invalid_request", f"line {number} must be a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _Refused("missing_custom_id", f"line {number} needs a `custom_id` string")
    if line.get("method", "POST") != "POST":
        return _Refused("invalid_method", f"line {number}: `method` must be POST", custom_id)
    if line.get("url") != endpoint:
        return _Refused(
            "invalid_url",
            f"line {number}: `url` must be the batch's endpoint {endpoint}, "
            f"got {brief(line.get('url'))}",
            custom_id,
        )
    if not isinstance(line.get("body"), dict):
        return _Refused("invalid_body", f"line {number}: `body` must be a JSON object", custom_id)
    return custom_id, line["body"]


def failure_line(custom_id: str | None, code: str, message: str) -> bytes:
    return _failure(f"batch_req_{uuid.uuid4().hex}", custom_id, code, message)


def _failure(request_id: str, custom_id: str | None, code: str, message: str) -> bytes:
    return (
        orjson.dumps(
            {
                "id": request_id,
                "custom_id": custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
        )
        + b"\n"
    )


async def _call_until_accepted(
    app: BatchApp, path: str, call: Endpoint, body: dict[str, Any]
) -> tuple[int, bytes, int]:
    """(status, body, tokens noted by the route) of the first answer that is not "not now"."""
    delay = 0.0
    while True:
        response, tokens = await _call(app, path, call, body)
        first = _RETRY_STATUSES.get(response.status_code)
        if first is None or _is_draining(response):
            return response.status_code, bytes(response.body), tokens
        delay = min(max(first, delay * 2), _MAX_RETRY_DELAY_S)
        await asyncio.sleep(delay)


def _is_draining(response: Response) -> bool:
    # The server is shutting down: the runner is about to be cancelled; don't spin.
    return b'"code":"draining"' in bytes(response.body)


async def _call(
    app: BatchApp, path: str, call: Endpoint, body: dict[str, Any]
) -> tuple[Response, int]:
    guard = app.guard()
    try:
        answer, headers = await call(body, guard)
        response = json_response(answer, headers=headers)
    except APIError as exc:
        response = error_response(exc, {"path": path})
    except Exception:  # the HTTP app's catch-all, for lines: log it, answer a bare 500
        log.exception("unhandled error on a batch line for %s", path)
        error = APIError(ErrorKind.INTERNAL, "internal server error")
        response = error_response(error, {"path": path})
    if response.status_code == 200:
        # Batch work is engine work: it counts in /metrics as a request's would.
        app.state["metrics"].count_work(guard.notes)
    return response, int(guard.notes.get("tokens", 0))


async def _never() -> None:
    # A batch line has no client that could go away: the runner ends it by cancelling it.
    await asyncio.Event().wait()
