"""Input limits: body size (before the body is read), JSON only, and per-request counts.

Every limit is a `Settings` option (gateway/config.py) with a documented default. The body
cap is an ASGI middleware so that nothing past it ever holds more than the cap in memory,
whether the client sent a `Content-Length` or a chunked body.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response, invalid

# Lone surrogates cannot be encoded as UTF-8 (the tokenizer would fail on them); NUL is
# refused because tokenizers and downstream stores treat it inconsistently.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


def too_large(limit: int) -> APIError:
    # The rest of the body stays unread: close the connection rather than drain it.
    return APIError(ErrorKind.PAYLOAD_TOO_LARGE,
                    f"the request body is larger than the limit of {limit} bytes",
                    headers={"connection": "close"})


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: at once from `Content-Length`, or as soon as a
    streamed (chunked) body passes the limit, before the excess is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 upload_limits: Mapping[str, int] | None = None) -> None:
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
            await error_response(error, path=scope["path"], close=True)(scope, receive, send)
            return
        if declared > limit:
            await error_response(too_large(limit), path=scope["path"])(
                scope, receive, send)
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


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 unless it says it is JSON, 400 unless it parses.
    orjson refuses nesting past 1024 levels and lone surrogates with a JSONDecodeError, so
    neither can reach a RecursionError or the tokenizer."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                       "the request body must be JSON, sent with Content-Type: application/json")
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc


def check_texts(texts: Sequence[object], *, max_items: int, param: str = "input") -> None:
    """At most `max_items` inputs; no string among them holding NUL or a lone surrogate
    (token-id inputs are checked against the vocabulary by the engine)."""
    if len(texts) > max_items:
        raise invalid(f"`{param}` has {len(texts)} items, but a request may have at most "
                      f"{max_items}", param=param)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        found = _FORBIDDEN.search(text)
        if found:
            what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
            raise invalid(f"`{param}[{i}]` contains {what} at position {found.start()}",
                          param=param)


def check_documents(documents: Sequence[str], max_documents: int) -> None:
    """For rerank: at most `max_documents` documents (GATEWAY_MAX_RERANK_DOCUMENTS), clean
    text. Rerank routes call this, then `admission.run_guarded` with the document count."""
    check_texts(documents, max_items=max_documents, param="documents")
