"""The OpenAPI 3 description served at /openapi.json: every route, request and error shape.

Request bodies are generated from the declarations the routes parse with (schemas.py,
cohere.py, rerank.py), so the document cannot drift from what is accepted; limits from the
settings (inputs per request, rerank documents, served model names) appear as schema
constraints, so a schema fuzzer's "valid" requests are ones the server accepts. Responses are
described here by hand. Tests check that every route is described with its methods, and that
every documented request field and constraint holds (tests/gateway/test_openapi.py).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from gateway.batches.openapi import OPENAPI_PATHS as BATCH_PATHS
from gateway.cohere import CohereEmbedRequest
from gateway.config import Settings
from gateway.rerank import RERANK_PATHS, RerankRequest
from gateway.schemas import EmbeddingsRequest, request_schemas

_ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    return {str(status): _ERROR for status in statuses}


def _operation(summary: str, ok: dict, *, body: dict | None = None,
               errors: Sequence[int] = (), public: bool = False) -> dict:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", **_json(ok)},
                      **_errors(*errors, 405, 500)},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if public:
        operation["security"] = []
    else:
        operation["responses"].update(_errors(401))
    return operation


_RERANK_RESPONSE = {
    "type": "object",
    "required": ["id", "model", "results"],
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "results": {"type": "array", "items": {
            "type": "object", "required": ["index", "relevance_score"],
            "properties": {"index": {"type": "integer"}, "relevance_score": {"type": "number"},
                           "document": {"type": "object"}}}},
        "meta": {"type": "object"},
        "usage": {"type": "object"},
    },
}

# Cohere's answer: v1 without `embedding_types` is a list of float vectors; otherwise a map
# from embedding type to vectors (described loosely: the shapes differ by type).
_COHERE_EMBED_RESPONSE = {
    "type": "object",
    "required": ["id", "embeddings"],
    "properties": {"id": {"type": "string"},
                   "embeddings": {"type": ["array", "object"]},
                   "texts": {"type": "array", "items": {"type": "string"}},
                   "meta": {"type": "object"}},
}


_EMBEDDINGS_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object",
            "required": ["object", "index", "embedding"],
            "properties": {
                "object": {"const": "embedding"},
                "index": {"type": "integer"},
                "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}},
                                        {"type": "string", "format": "byte"}]},
            },
        }},
        "model": {"type": "string"},
        "usage": {"type": "object", "properties": {
            "prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}},
    },
}

_MODELS_RESPONSE = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "created": {"type": "integer"}, "owned_by": {"type": "string"},
                           "root": {"type": "string"}},
        }},
    },
}

_STATUS = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "string"},
    "models": {"type": "object", "additionalProperties": {"type": "string"}},
    # While engines start: each starting model's step and seconds since its start began.
    "progress": {"type": "object", "additionalProperties": {"type": "object", "properties": {
        "step": {"type": "string"}, "elapsed_s": {"type": "number"}}}}}}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}


def openapi_document(settings: Settings, models: Sequence[str] = ()) -> dict:
    """The document for an app with these settings serving these model names."""
    bodies, request_components = request_schemas(
        (EmbeddingsRequest, CohereEmbedRequest, RerankRequest), settings, models)
    embeddings = _operation(
        "Create embeddings (OpenAI contract)", _EMBEDDINGS_RESPONSE,
        body=bodies[EmbeddingsRequest], errors=(400, 404, 413, 415, 429, 503, 504))
    cohere_embed = _operation(
        "Embed texts (Cohere embed contract, v1 and v2 shapes)", _COHERE_EMBED_RESPONSE,
        body=bodies[CohereEmbedRequest], errors=(400, 404, 413, 415, 429, 503, 504))
    rerank = _operation(
        "Rerank documents for a query (Cohere v1/v2 and Jina shapes; errors on these paths "
        "also carry a top-level `detail`)", _RERANK_RESPONSE,
        body=bodies[RerankRequest], errors=(400, 404, 413, 415, 429, 503, 504))
    list_models = _operation("List served models and aliases", _MODELS_RESPONSE)
    metrics = _operation("Prometheus metrics (text exposition format)", {"type": "string"},
                         public=settings.public_metrics)
    metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "embedding-gateway", "version": "0.1.0",
                 "description": "OpenAI-compatible embeddings on in-process vLLM engines. "
                                "Every error is the OpenAI error envelope."},
        "paths": {
            "/v1/embeddings": {"post": embeddings},
            "/embeddings": {"post": embeddings},
            "/v1/embed": {"post": cohere_embed},
            "/v2/embed": {"post": cohere_embed},
            **{path: {"post": rerank} for path in RERANK_PATHS},
            "/v1/models": {"get": list_models},
            "/models": {"get": list_models},
            "/health": {"get": _operation("Liveness: the process is up", _STATUS, public=True)},
            "/ready": {"get": _operation("Readiness: every engine can serve (503 while loading, "
                                         "after an engine fault, and while draining)", _STATUS,
                                         errors=(503,), public=True)},
            "/openapi.json": {"get": _operation("This document", {"type": "object"})},
            # A copy: the document is edited below (security), the declarations stay as they are.
            **copy.deepcopy(BATCH_PATHS),
            "/metrics": {"get": metrics},
        },
        "components": {
            "schemas": {**request_components, "Error": _ERROR_SCHEMA},
            "responses": {"Error": {"description": "The OpenAI error envelope",
                                    **_json({"$ref": "#/components/schemas/Error"})}},
        },
    }
    if settings.api_keys:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                                "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    else:
        for path in document["paths"].values():
            for operation in path.values():
                operation.pop("security", None)
                operation["responses"].pop("401", None)
    return document
