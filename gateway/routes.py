"""One short async function per endpoint: parse, call the engine, answer."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admission import run_guarded
from gateway.encoding import check_dimensions, encode_vectors, truncate_dimensions
from gateway.limits import check_texts, read_json
from gateway.observe import note
from gateway.openapi import openapi_document
from gateway.registry import ModelRegistry
from gateway.schemas import embeddings_response, models_response, parse_embeddings_request

_STARTED = int(time.time())


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def registry_of(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def create_embeddings(request: Request) -> Response:
    """POST /v1/embeddings: the OpenAI embeddings contract."""
    settings = request.app.state.settings
    req = parse_embeddings_request(await read_json(request))
    check_texts(req.texts, max_items=settings.max_inputs)
    served = registry_of(request).resolve(req.model)
    note(request, model=served.name, inputs=len(req.texts))
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    batch = await run_guarded(request, served, len(req.texts), lambda: served.engine.embed(
        req.texts, max_total_tokens=settings.max_request_tokens))
    note(request, tokens=batch.total_tokens)
    vectors = truncate_dimensions(batch.vectors, req.dimensions)
    data = encode_vectors(vectors, req.encoding_format)
    return json_response(embeddings_response(req.model, data, batch.total_tokens))


async def list_models(request: Request) -> Response:
    """GET /v1/models: every served name and alias, in the OpenAI list shape."""
    return json_response(models_response(list(registry_of(request).names()), _STARTED))


async def health(request: Request) -> Response:
    """GET /health: the process is alive (engines may still be loading)."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """GET /ready: 200 once every engine has loaded and can serve, 503 otherwise (also while
    the server drains after SIGTERM)."""
    states = await registry_of(request).readiness()
    if request.app.state.drain.draining:
        return json_response({"status": "draining", "models": states}, 503)
    ok = all(state == "ready" for state in states.values())
    return json_response({"status": "ready" if ok else "not ready", "models": states},
                         200 if ok else 503)


async def openapi(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI 3 description of every route."""
    names = [name for name, _ in registry_of(request).names()]
    return json_response(openapi_document(request.app.state.settings, names))


ROUTES = [
    Route("/v1/embeddings", create_embeddings, methods=["POST"]),
    Route("/embeddings", create_embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
