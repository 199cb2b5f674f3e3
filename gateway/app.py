"""create_app(registry, settings) -> Starlette. The lifespan owns engine start and stop and
the engine watchdog; the middleware stack applies request ids and logs, traces (when on), the
drain gate, CORS, authentication, the caller's rate limits and the body limit to every route,
in that order (outermost first)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from gateway import batches
from gateway.api.routes import ROUTES
from gateway.config import Settings
from gateway.errors import APIError, ErrorKind, error_response
from gateway.http.body import BodyLimitMiddleware
from gateway.http.docs import DOCS_PATHS, DOCS_ROUTES
from gateway.http.drain import Drain, DrainGateMiddleware
from gateway.http.request_context import RequestContextMiddleware
from gateway.http.security import PUBLIC_PATHS, AuthMiddleware
from gateway.http.tracing import Tracing, TracingMiddleware, start_tracing
from gateway.metrics import Metrics
from gateway.serving.admission import Admission
from gateway.serving.registry import ModelRegistry
from gateway.serving.token_ids import Cl100kDecoder
from gateway.state import GatewayState
from gateway.tenancy.keys import KeyRing
from gateway.tenancy.limits import RATE_LIMIT_HEADERS, RateLimiter
from gateway.tenancy.middleware import TenantMiddleware

log = logging.getLogger(__name__)


def create_app(
    registry: ModelRegistry,
    settings: Settings | None = None,
    *,
    on_fatal: Callable[[], None] | None = None,
    tiktoken_dir: str | None = None,
    freeze_heap: bool = False,
    serve_when_ready: bool = False,
) -> Starlette:
    """The ASGI app serving `registry`'s models with `settings`' server options;
    `tiktoken_dir` (default: `settings.tiktoken_cache_dir`) holds the cl100k_base file that
    token-id inputs are decoded with.

    Engines start in the background so that /health answers and /ready says 503 while they
    load. If any engine fails to load, `on_fatal` is called (the CLI stops the server with a
    non-zero exit, as vLLM and TEI do); without it the app keeps serving the others.
    `freeze_heap` (the server process's choice, not a test's) freezes the start-up heap once
    the engines have started (`freeze_startup_heap`). With `serve_when_ready` the lifespan's
    start-up waits for the engines (loaded or failed), so the server accepts no request
    before then (a replacement worker: the others serve meanwhile).
    """

    settings = settings or Settings()
    drain = Drain()
    traces = start_tracing(settings.otlp_endpoint)
    metrics = Metrics(registry, ROUTES, settings.max_inflight_inputs)
    state = GatewayState(
        registry=registry,
        settings=settings,
        admission=Admission(settings.max_inflight_inputs, on_change=metrics.set_inflight),
        drain=drain,
        cl100k=Cl100kDecoder(tiktoken_dir or settings.tiktoken_cache_dir),
        batches=batches.BatchService(settings),
        metrics=metrics,
        tracing=traces,
    )
    # Several workers on one host share their rate-limit buckets in the batch folder; not
    # when that folder is a fleet's network volume, where SQLite's locks do not hold.
    local = settings.batch_database_url is None
    shared = settings.batch_dir if settings.workers > 1 and local else None
    limiter = RateLimiter(settings.rate_limit_rpm, settings.rate_limit_tpm, shared)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[GatewayState]:
        async def start() -> None:
            loaded = await registry.start_all()
            if freeze_heap:
                freeze_startup_heap()
            if not loaded and on_fatal is not None:
                on_fatal()

        starting = asyncio.create_task(start(), name="engine-start")
        if serve_when_ready:
            await asyncio.wait({starting})
        watchdog = asyncio.create_task(
            registry.watch(settings.health_check_interval_s, settings.health_check_timeout_s),
            name="engine-watchdog",
        )
        batch_runner = asyncio.create_task(state["batches"].run(app), name="batch-runner")
        syncing = asyncio.create_task(metrics.sync_forever(), name="metrics-sync")
        try:
            yield state
        finally:
            for task in (starting, watchdog, batch_runner, syncing):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await registry.shutdown_all()
            limiter.close()
            if traces is not None:
                traces.shutdown()  # sends the spans still batched

    app = Starlette(
        routes=[*ROUTES, *DOCS_ROUTES],
        lifespan=lifespan,
        middleware=_middleware(settings, drain, metrics, limiter, traces),
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
        },
    )
    # Starlette would answer `/v1/embeddings/` with a redirect to a URL built from the Host
    # header (a client-controlled value reflected in `Location`); unknown paths are 404.
    app.router.redirect_slashes = False
    # The same objects outside requests: the CLI's draining server, batch jobs, tests.
    app.state.gateway = state
    return app


def _middleware(
    settings: Settings,
    drain: Drain,
    metrics: Metrics,
    limiter: RateLimiter,
    traces: Tracing | None,
) -> list[Middleware]:
    stack = [Middleware(RequestContextMiddleware, observer=metrics)]
    if traces is not None:  # off, requests pay nothing for it
        stack.append(Middleware(TracingMiddleware, tracing=traces))
    stack.append(Middleware(DrainGateMiddleware, drain=drain))
    if settings.cors_allow_origins:
        # Outside auth, so that browsers' preflight requests (which carry no key) get an answer.
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_allow_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=[
                    "x-request-id",
                    "x-queue-time",
                    "x-tokenization-time",
                    "x-inference-time",
                    "x-total-time",
                    *RATE_LIMIT_HEADERS,
                ],
            )
        )
    # /docs and the document it renders are public unless --private-docs; the calls it makes
    # need the key.
    docs = set() if settings.private_docs else DOCS_PATHS | {"/openapi.json"}
    public = PUBLIC_PATHS | docs | ({"/metrics"} if settings.public_metrics else set())
    keys = KeyRing(settings.api_keys, settings.api_key_file)
    stack.append(Middleware(AuthMiddleware, keys=keys, public_paths=public))
    stack.append(Middleware(TenantMiddleware, limiter=limiter))
    stack.append(
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            upload_limits=batches.upload_limits(settings),
        )
    )
    return stack


def _respond(request: Request, error: APIError) -> Response:
    return error_response(error, request.scope)


def freeze_startup_heap() -> None:
    """Move what start-up allocated (torch, transformers, vLLM's front end and tokenizers:
    millions of objects) out of the garbage collector's sight. Otherwise every full
    collection walks all of it, a 100-400 ms pause of the event loop on 2 CPU cores, in the
    middle of serving; vLLM's own API server does the same (`freeze_gc_heap`)."""
    gc.collect()
    gc.freeze()
    log.info(
        "start-up heap frozen: %d objects the collector no longer walks", gc.get_freeze_count()
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _respond(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = APIError(
            ErrorKind.METHOD_NOT_ALLOWED,
            f"method {request.method} is not allowed on {_path(request)}",
            headers=dict(exc.headers or {}),
        )
    elif exc.status_code == 404:
        error = APIError(ErrorKind.NOT_FOUND, f"no route {request.method} {_path(request)}")
    else:
        error = APIError(ErrorKind.INVALID_REQUEST, str(exc.detail))
    return _respond(request, error)


def _path(request: Request) -> str:
    # The path routing used (request.url is rebuilt from the Host header), echoed briefly.
    path: str = request.scope["path"]
    return path if len(path) <= 100 else path[:100] + "..."
