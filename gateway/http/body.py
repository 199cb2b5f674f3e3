"""The request body: the size cap (before the body is read) and decoding it as JSON.

The cap (`--max-body-bytes`) is an ASGI middleware so that nothing past it ever holds more
than the cap in memory, whether the client sent a `Content-Length` or a chunked body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response, invalid


def too_large(limit: int) -> APIError:
    # The rest of the body stays unread: close the connection rather than drain it.
    return APIError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"the request body is larger than the limit of {limit} bytes",
        headers={"connection": "close"},
    )


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: at once from `Content-Length`, or as soon as a
    streamed (chunked) body passes the limit, before the excess is buffered."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # POSTs to these exact paths (file uploads) may carry up to their own limit.
        self.upload_limits = dict(upload_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope.get("method") == "POST":
            limit = self.upload_limits.get(scope["path"], limit)
        declared = _content_length(scope)
        if declared is None:
            error = invalid("the Content-Length header is not a valid number")
            await error_response(error, scope, close=True)(scope, receive, send)
            return
        if declared > limit:
            await error_response(too_large(limit), scope)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)  # answered by the app's APIError handler
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length (0 when absent), or None when the header is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return 0


async def read_json(request: Request[Any]) -> Any:
    """The request body as JSON: 415 unless it says it is JSON, 400 unless it parses.
    orjson refuses nesting past 1024 levels and lone surrogates with a JSONDecodeError, so
    neither can reach a RecursionError or the tokenizer."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(
            ErrorKind.UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON, sent with Content-Type: application/json",
        )
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc
