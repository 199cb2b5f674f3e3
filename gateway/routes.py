"""One short async function per endpoint: parse, call the engine, answer."""

from __future__ import annotations

import time
from typing import Any, Awaitable, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.base import EngineError
from gateway.encoding import check_dimensions, encode_vectors, truncate_dimensions
from gateway.errors import from_engine_error, invalid
from gateway.registry import ModelRegistry
from gateway.rerank import RERANK_PATHS, api_version_of, parse_rerank_request, rank, rerank_response
from gateway.schemas import embeddings_response, models_response, parse_embeddings_request

T = TypeVar("T")
_STARTED = int(time.time())


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc


async def run_engine(call: Awaitable[T]) -> T:
    """Await an engine call, turning the engine vocabulary into API errors."""
    try:
        return await call
    except EngineError as exc:
        raise from_engine_error(exc) from exc


def registry_of(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def create_embeddings(request: Request) -> Response:
    """POST /v1/embeddings: the OpenAI embeddings contract."""
    req = parse_embeddings_request(await read_json(request))
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    batch = await run_engine(served.engine.embed(req.texts))
    vectors = truncate_dimensions(batch.vectors, req.dimensions)
    data = encode_vectors(vectors, req.encoding_format)
    return json_response(embeddings_response(req.model, data, batch.total_tokens))


async def rerank(request: Request) -> Response:
    """POST /v1/rerank, /v2/rerank, /rerank: Cohere v1/v2 and Jina rerank, one handler."""
    req = parse_rerank_request(await read_json(request))
    served = registry_of(request).resolve(req.model)
    ranking = await run_engine(rank(served.engine, req))
    return json_response(rerank_response(req, ranking, api_version_of(request.url.path)))


async def list_models(request: Request) -> Response:
    """GET /v1/models: every served name and alias, in the OpenAI list shape."""
    return json_response(models_response(list(registry_of(request).names()), _STARTED))


async def health(request: Request) -> Response:
    """GET /health: the process is alive (engines may still be loading)."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """GET /ready: 200 once every engine has loaded and can serve, 503 otherwise."""
    states = await registry_of(request).readiness()
    ok = all(state == "ready" for state in states.values())
    return json_response({"status": "ready" if ok else "not ready", "models": states},
                         200 if ok else 503)


ROUTES = [
    Route("/v1/embeddings", create_embeddings, methods=["POST"]),
    Route("/embeddings", create_embeddings, methods=["POST"]),
    *(Route(path, rerank, methods=["POST"]) for path in RERANK_PATHS),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
]
