"""The one error type of the HTTP layer and the one table that turns it into a response.

Every error answer, whatever its cause (validation, unknown model, unknown route, engine
failure), is built here in the OpenAI envelope
`{"error": {"message", "type", "param", "code"}}`. Nothing else builds error JSON.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Scope

from adapters.base import (
    EngineError,
    EngineFailure,
    EngineOverloaded,
    EngineUnavailable,
    InvalidInput,
)
from gateway.http.dialects import API, dialect_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Kind:
    status: int
    type: str
    code: str | None


class ErrorKind(Enum):
    """What went wrong, from the client's point of view; each maps to one status and type."""

    INVALID_REQUEST = _Kind(400, "invalid_request_error", None)
    MODEL_NOT_FOUND = _Kind(404, "invalid_request_error", "model_not_found")
    NOT_FOUND = _Kind(404, "invalid_request_error", "not_found")
    METHOD_NOT_ALLOWED = _Kind(405, "invalid_request_error", "method_not_allowed")
    UNAUTHORIZED = _Kind(401, "authentication_error", "invalid_api_key")
    PAYLOAD_TOO_LARGE = _Kind(413, "invalid_request_error", "payload_too_large")
    UNSUPPORTED_MEDIA_TYPE = _Kind(415, "invalid_request_error", "unsupported_media_type")
    RATE_LIMITED = _Kind(429, "rate_limit_error", "rate_limit_exceeded")
    # nginx's code for "the client went away first"; only ever written to the log.
    CLIENT_CLOSED = _Kind(499, "invalid_request_error", "client_closed_request")
    INTERNAL = _Kind(500, "server_error", "internal_error")
    ENGINE_FAILURE = _Kind(500, "server_error", "engine_failure")
    UNAVAILABLE = _Kind(503, "service_unavailable", "model_unavailable")
    INSUFFICIENT_STORAGE = _Kind(507, "server_error", "insufficient_storage")
    TIMEOUT = _Kind(504, "server_error", "timeout")


class APIError(Exception):
    """Raised by routes; turned into the OpenAI error envelope by `error_response`."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code or kind.value.code
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.kind.value.status

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind.value.type,
                "param": self.param,
                "code": self.code,
            }
        }


def brief(value: Any) -> str:
    """A short echo of a client value for an error message: never a huge string, never a
    repr of nested containers (which could recurse past the interpreter's limit)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)[:40]
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def invalid(message: str, param: str | None = None) -> APIError:
    """Shorthand for the most common error: a 400 about one request field."""
    return APIError(ErrorKind.INVALID_REQUEST, message, param=param)


# An absolute file path of two or more components (`/models/BAAI/bge/tokenizer.json`), as an
# engine or library message may carry; not a URL (`http://...`), not a lone `/`.
_FILE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def hide_paths(message: str) -> str:
    """`message` with server file paths replaced by `<path>`, for a client."""
    return _FILE_PATH.sub("<path>", message)


def from_engine_error(exc: EngineError) -> APIError:
    """Translate the engine vocabulary to client-facing errors; the one place that does.
    Server file paths in the engine's message (a model folder, a tokenizer file) stay in the
    log and are hidden from the client."""
    param = "input" if exc.index is not None else None
    message = hide_paths(exc.message)
    if message != exc.message:
        log.warning("engine error (paths hidden from the client): %s", exc.message)
    if isinstance(exc, InvalidInput):
        return APIError(ErrorKind.INVALID_REQUEST, message, param=param)
    if isinstance(exc, EngineOverloaded):
        return APIError(ErrorKind.RATE_LIMITED, message, headers={"Retry-After": "1"})
    if isinstance(exc, EngineUnavailable):
        return APIError(ErrorKind.UNAVAILABLE, message, headers={"Retry-After": "10"})
    if isinstance(exc, EngineFailure):
        return APIError(ErrorKind.ENGINE_FAILURE, message, param=param)
    return APIError(ErrorKind.INTERNAL, "internal server error")


# Hugging Face TEI's error body is `{"error": message, "error_type": type}` with its own
# statuses (router/src/http/server.rs): a refused request is 422 as TEI's JSON extractor
# answers, an over-long batch 413 `validation`, overload 429, an unhealthy model 503, a
# failed inference 424 `backend`. Kinds TEI has no answer for keep their status.
_TEI: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (422, "validation"),
    ErrorKind.MODEL_NOT_FOUND: (422, "validation"),
    ErrorKind.PAYLOAD_TOO_LARGE: (413, "validation"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "validation"),
    ErrorKind.RATE_LIMITED: (429, "overloaded"),
    ErrorKind.UNAVAILABLE: (503, "unhealthy"),
    ErrorKind.ENGINE_FAILURE: (424, "backend"),
    ErrorKind.TIMEOUT: (424, "backend"),
}


def tei_status(error: APIError) -> tuple[int, str]:
    """The status and `error_type` of an error on a TEI route."""
    return _TEI.get(error.kind, (error.status, error.kind.value.code or "validation"))


def error_response(error: APIError, scope: Scope, *, close: bool = False) -> Response:
    """The HTTP response for an error on the request `scope`, shaped for its dialect (on
    rerank paths and the texts API's /embed the body also carries `detail`; on TEI's routes it is
    TEI's body and status, on Ollama's `{"error": message}`); deciding it here gives every
    error there (auth, limits, draining, routes) the same body. `close` ends the connection after it (a body left
    unread, a draining server)."""
    dialect = dialect_of(scope)
    status = error.status
    body: dict[str, Any]
    if dialect.api is API.TEI:
        status, error_type = tei_status(error)
        body = {"error": error.message, "error_type": error_type}
    elif dialect.api is API.OLLAMA:
        body = {"error": error.message}  # Ollama's clients raise it as the message
    else:
        body = error.body()
    if dialect.error_detail:
        body["detail"] = error.message
    headers = dict(error.headers)
    if error.status >= 500 and error.kind is not ErrorKind.UNAVAILABLE:
        # The same input would fail again: tell openai-python and friends not to retry.
        headers.setdefault("x-should-retry", "false")
    if close:
        headers["connection"] = "close"
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )
