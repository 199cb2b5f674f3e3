"""One short async function per endpoint: parse, call the engine, answer."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import Route

from adapters.base import EmbeddingBatch
from gateway import batches, cohere
from gateway.admission import run_guarded
from gateway.body import read_json
from gateway.dialects import API, dialect_of, settle
from gateway.encoding import (
    check_dimensions,
    encode_vectors,
    refuse_non_finite,
    truncate_dimensions,
)
from gateway.inputs import engine_call
from gateway.openapi import openapi_document
from gateway.registry import ModelRegistry, ServedModel
from gateway.request_context import note, timing
from gateway.rerank import (
    RERANK_PATHS,
    parse_rerank_request,
    rank,
    rerank_response,
)
from gateway.schemas import (
    Inputs,
    Truncation,
    embeddings_response,
    models_response,
    parse_embeddings_request,
)
from gateway.state import GatewayRequest
from gateway.token_ids import Cl100kDecoder

_STARTED = int(time.time())


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def truncation_header(batch: EmbeddingBatch) -> dict[str, str]:
    """Truncation is never silent: the indices of truncated inputs, when there are any."""
    if not batch.truncated:
        return {}
    return {"x-truncated-inputs": ",".join(map(str, batch.truncated))}


def registry_of(request: GatewayRequest) -> ModelRegistry:
    return request.state["registry"]


def decoder_of(request: GatewayRequest) -> Cl100kDecoder:
    return request.state["cl100k"]


async def embed(
    request: GatewayRequest,
    served: ServedModel,
    name: str,
    inputs: Inputs,
    input_type: str | None,
    truncation: Truncation,
    *,
    normalize: bool = True,
) -> EmbeddingBatch:
    """The inputs (checked against the limits when parsed) made prompts, and embedded under
    admission control, the request timeout and disconnect and fault watch (`run_guarded`);
    `normalize=False` asks for the model's vectors before its normalisation (TEI)."""
    settings = request.state["settings"]
    note(request, model=served.name, inputs=len(inputs))
    call = await engine_call(
        served, name, inputs, input_type, truncation, decoder_of(request), settings
    )
    options = replace(
        call.options, max_total_tokens=settings.max_request_tokens, normalize=normalize
    )
    batch = await run_guarded(
        request, served, len(inputs), lambda: served.engine.embed(call.prompts, options)
    )
    timing(request).tokenization_s = batch.tokenization_s
    note(request, tokens=batch.total_tokens)
    return batch


async def create_embeddings(request: GatewayRequest) -> Response:
    """POST /v1/embeddings: the OpenAI embeddings contract."""
    req = parse_embeddings_request(await read_json(request), request.state["settings"])
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    batch = await embed(request, served, req.model, req.inputs, req.input_type, req.truncation)
    vectors = truncate_dimensions(batch.vectors, req.dimensions)
    data = encode_vectors(vectors, req.encoding_format)
    return json_response(
        embeddings_response(req.model, data, batch.total_tokens), headers=truncation_header(batch)
    )


async def cohere_embed(request: GatewayRequest) -> Response:
    """POST /v1/embed and /v2/embed: Cohere's embed contract (texts only)."""
    version = dialect_of(request.scope).version
    req = cohere.parse_cohere_embed(await read_json(request), request.state["settings"])
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.output_dimension, served.engine.facts.dimension, param="output_dimension")
    batch = await embed(request, served, req.model, req.texts, req.input_type, req.truncation)
    vectors = truncate_dimensions(batch.vectors, req.output_dimension)
    refuse_non_finite(vectors)
    body = cohere.embed_response(
        req, vectors, version=version, input_tokens=batch.total_tokens, truncated=batch.truncated
    )
    return json_response(body, headers=truncation_header(batch))


async def rerank(request: GatewayRequest) -> Response:
    """POST /v1/rerank, /v2/rerank, /rerank: Cohere v1/v2 and Jina rerank, one handler;
    TEI's rerank (`texts`, no `documents`) on /rerank."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.TEI:
        return await native_routes.tei_rerank(request, body)
    req = parse_rerank_request(body, request.state["settings"])
    served = registry_of(request).resolve(req.model)
    note(request, model=served.name, documents=len(req.texts))
    ranking = await rank(request, served, req)
    timing(request).tokenization_s = ranking.tokenization_s
    note(request, tokens=ranking.prompt_tokens)
    return json_response(rerank_response(req, ranking, dialect_of(request.scope).version))


async def list_models(request: GatewayRequest) -> Response:
    """GET /v1/models: every served name and alias, in the OpenAI list shape."""
    return json_response(models_response(list(registry_of(request).names()), _STARTED))


async def health(request: GatewayRequest) -> Response:
    """GET /health (liveness): 200 while the process can serve or recover (engines may be
    loading or restarting); 503 once a model is down for good, so that the orchestrator
    restarts the process."""
    down = registry_of(request).given_up()
    if down:
        return json_response({"status": "down", "models": down}, 503)
    return json_response({"status": "ok"})


async def ready(request: GatewayRequest) -> Response:
    """GET /ready: 200 once every engine has loaded and can serve, 503 otherwise (also while
    the server drains after SIGTERM, and once the batch runner has failed for minutes).
    `models` holds each model's state; while engines start, `progress` holds each starting
    one's step and seconds since its start began; `batch_runner` appears while the batch
    runner retries after an error or is paused for disk space."""
    registry = registry_of(request)
    states = await registry.readiness()
    progress = registry.progress()
    extra: dict[str, Any] = {"progress": progress} if progress else {}
    runner = request.state["batches"].health
    report = runner.report()
    if report is not None:  # retrying or paused: see gateway/batches/health.py
        extra["batch_runner"] = report
    if request.state["drain"].draining:
        return json_response({"status": "draining", "models": states, **extra}, 503)
    ok = all(state == "ready" for state in states.values()) and runner.ready
    return json_response(
        {"status": "ready" if ok else "not ready", "models": states, **extra}, 200 if ok else 503
    )


async def metrics(request: GatewayRequest) -> Response:
    """GET /metrics: Prometheus text format (behind the API key unless --public-metrics)."""
    body, content_type = request.state["metrics"].exposition()
    return Response(body, media_type=content_type)


async def openapi(request: GatewayRequest) -> Response:
    """GET /openapi.json: the OpenAPI 3 description of every route, built once per app (its
    settings and model names are fixed once it serves): it is public, and takes about 10 ms
    to build."""
    cached: bytes | None = getattr(request.app.state, "openapi_json", None)
    if cached is None:
        names = [name for name, _ in registry_of(request).names()]
        cached = orjson.dumps(openapi_document(request.state["settings"], names))
        request.app.state.openapi_json = cached
    return Response(cached, media_type="application/json")


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
    Route("/openapi.json", openapi, methods=["GET"]),
    *batches.ROUTES,
    Route("/metrics", metrics, methods=["GET"]),
]

# Other servers' dialects (TEI, vLLM, the seed service); imported last because their handlers
# use the helpers above.
from gateway import native_routes

ROUTES += native_routes.NATIVE_ROUTES
