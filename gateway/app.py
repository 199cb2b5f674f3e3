"""create_app(registry) -> Starlette. The lifespan owns engine start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import APIError, ErrorKind, error_response
from gateway.registry import ModelRegistry
from gateway.rerank import is_rerank_path
from gateway.routes import ROUTES
from gateway.token_ids import Cl100kDecoder

log = logging.getLogger(__name__)


def create_app(
    registry: ModelRegistry,
    *,
    on_fatal: Callable[[], None] | None = None,
    tiktoken_dir: str | None = None,
) -> Starlette:
    """The ASGI app serving `registry`'s models; `tiktoken_dir` holds the cl100k_base file
    that token-id inputs are decoded with.

    Engines start in the background so that /health answers and /ready says 503 while they
    load. If any engine fails to load, `on_fatal` is called (the CLI stops the server with a
    non-zero exit, as vLLM and TEI do); without it the app keeps serving the others.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def start() -> None:
            if not await registry.start_all() and on_fatal is not None:
                on_fatal()

        starting = asyncio.create_task(start(), name="engine-start")
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            await registry.shutdown_all()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.registry = registry
    app.state.cl100k = Cl100kDecoder(tiktoken_dir)
    return app


def _respond(request: Request, error: APIError) -> Response:
    # The Jina rerank clients read a top-level `detail` instead of the OpenAI envelope.
    return error_response(error, with_detail=is_rerank_path(request.url.path))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _respond(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = APIError(ErrorKind.METHOD_NOT_ALLOWED,
                         f"method {request.method} is not allowed on {request.url.path}",
                         headers=dict(exc.headers or {}))
    elif exc.status_code == 404:
        error = APIError(ErrorKind.NOT_FOUND, f"no route {request.method} {request.url.path}")
    else:
        error = APIError(ErrorKind.INVALID_REQUEST, str(exc.detail))
    return _respond(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Says nothing internal to the client; the traceback goes to the log.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, APIError(ErrorKind.INTERNAL, "internal server error"))
