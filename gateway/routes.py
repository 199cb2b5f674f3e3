"""One short async function per endpoint: parse, call the engine, answer."""

from __future__ import annotations

import time
from typing import Any, Awaitable, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.base import EmbeddingBatch, EngineError
from gateway import cohere
from gateway.encoding import (
    check_dimensions,
    encode_vectors,
    refuse_non_finite,
    truncate_dimensions,
)
from gateway.errors import from_engine_error, invalid
from gateway.inputs import engine_call
from gateway.registry import ModelRegistry
from gateway.rerank import (
    RERANK_PATHS,
    api_version_of,
    parse_rerank_request,
    rank,
    rerank_response,
)
from gateway.schemas import embeddings_response, models_response, parse_embeddings_request
from gateway.token_ids import Cl100kDecoder

T = TypeVar("T")
_STARTED = int(time.time())


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")


def truncation_header(batch: EmbeddingBatch) -> dict[str, str]:
    """Truncation is never silent: the indices of truncated inputs, when there are any."""
    if not batch.truncated:
        return {}
    return {"x-truncated-inputs": ",".join(map(str, batch.truncated))}


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


def decoder_of(request: Request) -> Cl100kDecoder:
    return request.app.state.cl100k


async def create_embeddings(request: Request) -> Response:
    """POST /v1/embeddings: the OpenAI embeddings contract."""
    req = parse_embeddings_request(await read_json(request))
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    call = await engine_call(served, req.model, req.inputs, req.input_type, req.length,
                             decoder_of(request))
    batch = await run_engine(served.engine.embed(call.prompts, call.options))
    vectors = truncate_dimensions(batch.vectors, req.dimensions)
    data = encode_vectors(vectors, req.encoding_format)
    return json_response(embeddings_response(req.model, data, batch.total_tokens),
                         headers=truncation_header(batch))


async def cohere_embed(request: Request) -> Response:
    """POST /v1/embed and /v2/embed: Cohere's embed contract (texts only)."""
    version = 1 if request.url.path.startswith("/v1/") else 2
    req = cohere.parse_cohere_embed(await read_json(request), version=version)
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.output_dimension, served.engine.facts.dimension,
                     param="output_dimension")
    call = await engine_call(served, req.model, req.texts, req.input_type, req.length,
                             decoder_of(request))
    batch = await run_engine(served.engine.embed(call.prompts, call.options))
    vectors = truncate_dimensions(batch.vectors, req.output_dimension)
    refuse_non_finite(vectors)
    body = cohere.embed_response(req, vectors, version=version, input_tokens=batch.total_tokens,
                                 truncated=batch.truncated)
    return json_response(body, headers=truncation_header(batch))


async def rerank(request: Request) -> Response:
    """POST /v1/rerank, /v2/rerank, /rerank: Cohere v1/v2 and Jina rerank, one handler."""
    req = parse_rerank_request(await read_json(request))
    served = registry_of(request).resolve(req.model)
    ranking = await run_engine(rank(served, req))
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
    Route("/v1/embed", cohere_embed, methods=["POST"]),
    Route("/v2/embed", cohere_embed, methods=["POST"]),
    *(Route(path, rerank, methods=["POST"]) for path in RERANK_PATHS),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
]
