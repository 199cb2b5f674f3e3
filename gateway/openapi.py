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
from collections.abc import Sequence
from typing import Any

from gateway import tei, vllm_api
from gateway.batches import CreateBatchRequest, openapi_paths
from gateway.cohere import CohereEmbedRequest
from gateway.config import Settings
from gateway.rerank import RERANK_PATHS, RerankRequest
from gateway.schemas import EmbeddingsRequest, Wire, request_schemas
from gateway.seed import SeedEmbedRequest

_ERROR = {"$ref": "#/components/responses/Error"}
_TEI_ERROR = {"$ref": "#/components/responses/TeiError"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, error: dict[str, Any] = _ERROR) -> dict[str, Any]:
    return {str(status): error for status in statuses}


def _operation(
    summary: str,
    ok: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    errors: Sequence[int] = (),
    public: bool = False,
    error: dict[str, Any] = _ERROR,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", **_json(ok)},
            **_errors(*errors, 405, 500, error=error),
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if public:
        operation["security"] = []
    else:
        operation["responses"].update(_errors(401, error=error))
    return operation


def _either(*refs: dict[str, Any]) -> dict[str, Any]:
    """A body of one of several shapes (a path two APIs share; the server decides by the
    body's fields, as gateway/dialects.py says)."""
    return {"anyOf": list(refs)}


_FLOATS = {"type": "array", "items": {"type": "number"}}
_TEI_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
_TEI_RANKS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["index", "score"],
        "properties": {
            "index": {"type": "integer"},
            "score": {"type": "number"},
            "text": {"type": "string"},
        },
    },
}
_TEI_TOKENS = {
    "type": "array",
    "items": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["id", "text", "special", "start", "stop"],
            "properties": {
                "id": {"type": "integer"},
                "text": {"type": "string"},
                "special": {"type": "boolean"},
                "start": {"type": ["integer", "null"]},
                "stop": {"type": ["integer", "null"]},
            },
        },
    },
}
_SCORE_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "list"},
        "model": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "score"],
                "properties": {"index": {"type": "integer"}, "score": {"type": "number"}},
            },
        },
        "usage": {"type": "object"},
    },
}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "root": {"type": "string"},
    },
}
_DECLARED = (
    EmbeddingsRequest,
    CohereEmbedRequest,
    RerankRequest,
    SeedEmbedRequest,
    tei.TeiEmbedRequest,
    tei.TeiRerankRequest,
    tei.TeiSimilarityRequest,
    tei.TeiTokenizeRequest,
    tei.TeiDecodeRequest,
    vllm_api.ScoreTextRequest,
    vllm_api.ScoreQueriesRequest,
    vllm_api.VllmTokenizeRequest,
    vllm_api.DetokenizeRequest,
    CreateBatchRequest,
)
_ERRORS = (400, 404, 413, 415, 429, 503, 504)
_TEI_ERRORS = (413, 415, 422, 424, 429, 503)


def _native_paths(bodies: dict[type[Wire], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The routes of other servers' dialects (TEI, vLLM, the seed service)."""

    def tei_op(
        summary: str, ok: dict[str, Any], body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return _operation(
            summary + " (TEI; errors are TEI's `{error, error_type}`)",
            ok,
            body=body,
            errors=_TEI_ERRORS,
            error=_TEI_ERROR,
        )

    tei_embed = bodies[tei.TeiEmbedRequest]
    score = _operation(
        "Score text pairs (vLLM's /score)",
        _SCORE_RESPONSE,
        body=_either(bodies[vllm_api.ScoreTextRequest], bodies[vllm_api.ScoreQueriesRequest]),
        errors=_ERRORS,
    )
    retrieve = _operation("One served model (openai `models.retrieve`)", _MODEL, errors=(404,))
    retrieve["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    return {
        "/embed": {
            "post": _operation(
                "Embed texts: the seed service's `{texts}` -> `{embeddings}` (errors: the OpenAI "
                "envelope plus `detail`), or TEI's `{inputs}` -> `[[f32]]` (TEI's errors)",
                {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {"embeddings": {"type": "array", "items": _FLOATS}},
                        },
                        {"type": "array", "items": _FLOATS},
                    ]
                },
                body=_either(tei_embed, bodies[SeedEmbedRequest]),
                errors=_ERRORS + (422,),
            )
        },
        "/": {
            "post": tei_op(
                "TEI's default route: embed (`inputs` text), similarity (`inputs` object) or "
                "rerank (`texts`)",
                {"type": "array"},
                _either(tei_embed, bodies[tei.TeiSimilarityRequest], bodies[tei.TeiRerankRequest]),
            )
        },
        "/similarity": {
            "post": tei_op(
                "Cosine of each sentence with the source sentence",
                _FLOATS,
                bodies[tei.TeiSimilarityRequest],
            )
        },
        "/tokenize": {
            "post": _operation(
                "Tokenize: TEI's `{inputs}` -> `[[token]]` (TEI's errors) or vLLM's `{prompt}` -> "
                "`{count, max_model_len, tokens, token_strs}`",
                {"anyOf": [_TEI_TOKENS, {"type": "object"}]},
                body=_either(bodies[tei.TeiTokenizeRequest], bodies[vllm_api.VllmTokenizeRequest]),
                errors=_ERRORS + (422,),
            )
        },
        "/decode": {
            "post": tei_op(
                "Token ids back to text",
                {"type": "array", "items": {"type": "string"}},
                bodies[tei.TeiDecodeRequest],
            )
        },
        "/info": {"get": tei_op("The default model and the server's limits", {"type": "object"})},
        "/score": {"post": score},
        "/v1/score": {"post": score},
        "/detokenize": {
            "post": _operation(
                "Token ids back to text (vLLM)",
                {"type": "object", "properties": {"prompt": {"type": "string"}}},
                body=bodies[vllm_api.DetokenizeRequest],
                errors=_ERRORS,
            )
        },
        "/v1/models/{model}": {"get": retrieve},
        "/models/{model}": {"get": retrieve},
    }


_RERANK_RESPONSE = {
    "type": "object",
    "required": ["id", "model", "results"],
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "relevance_score"],
                "properties": {
                    "index": {"type": "integer"},
                    "relevance_score": {"type": "number"},
                    "document": {"type": "object"},
                },
            },
        },
        "meta": {"type": "object"},
        "usage": {"type": "object"},
    },
}

# Cohere's answer: v1 without `embedding_types` is a list of float vectors; otherwise a map
# from embedding type to vectors (described loosely: the shapes differ by type).
_COHERE_EMBED_RESPONSE = {
    "type": "object",
    "required": ["id", "embeddings"],
    "properties": {
        "id": {"type": "string"},
        "embeddings": {"type": ["array", "object"]},
        "texts": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
    },
}


_EMBEDDINGS_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer"},
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "format": "byte"},
                        ]
                    },
                },
            },
        },
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}

_MODELS_RESPONSE = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                    "root": {"type": "string"},
                },
            },
        },
    },
}

_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string"},
        "models": {"type": "object", "additionalProperties": {"type": "string"}},
        # While engines start: each starting model's step and seconds since its start began.
        "progress": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"step": {"type": "string"}, "elapsed_s": {"type": "number"}},
            },
        },
    },
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def openapi_document(settings: Settings, models: Sequence[str] = ()) -> dict[str, Any]:
    """The document for an app with these settings serving these model names."""
    bodies, request_components = request_schemas(_DECLARED, settings, models)
    embeddings = _operation(
        "Create embeddings (OpenAI contract)",
        _EMBEDDINGS_RESPONSE,
        body=bodies[EmbeddingsRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    cohere_embed = _operation(
        "Embed texts (Cohere embed contract, v1 and v2 shapes)",
        _COHERE_EMBED_RESPONSE,
        body=bodies[CohereEmbedRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    rerank = _operation(
        "Rerank documents for a query (Cohere v1/v2 and Jina shapes; errors on these paths "
        "also carry a top-level `detail`)",
        _RERANK_RESPONSE,
        body=bodies[RerankRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    list_models = _operation("List served models and aliases", _MODELS_RESPONSE)
    metrics = _operation(
        "Prometheus metrics (text exposition format)",
        {"type": "string"},
        public=settings.public_metrics,
    )
    metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "embedding-gateway",
            "version": "0.1.0",
            "description": "OpenAI-compatible embeddings on in-process vLLM engines. "
            "Errors are the OpenAI error envelope, except on TEI's routes "
            "(TEI's `{error, error_type}`).",
        },
        "paths": {
            "/v1/embeddings": {"post": embeddings},
            "/embeddings": {"post": embeddings},
            "/v1/embed": {"post": cohere_embed},
            "/v2/embed": {"post": cohere_embed},
            **{path: {"post": rerank} for path in RERANK_PATHS},
            # TEI's rerank shares /rerank: `texts` instead of `documents`.
            "/rerank": {
                "post": {
                    **rerank,
                    "requestBody": {
                        "required": True,
                        **_json(_either(bodies[RerankRequest], bodies[tei.TeiRerankRequest])),
                    },
                }
            },
            "/v1/models": {"get": list_models},
            "/models": {"get": list_models},
            "/health": {"get": _operation("Liveness: the process is up", _STATUS, public=True)},
            "/ready": {
                "get": _operation(
                    "Readiness: every engine can serve (503 while loading, "
                    "after an engine fault, and while draining)",
                    _STATUS,
                    errors=(503,),
                    public=True,
                )
            },
            # A copy: the document is edited below (security), the shared schemas stay as they are.
            **copy.deepcopy(openapi_paths(bodies[CreateBatchRequest])),
            "/metrics": {"get": metrics},
            "/openapi.json": {
                "get": _operation(
                    "This document (public, as /docs)", {"type": "object"}, public=True
                )
            },
            **_native_paths(bodies),
        },
        "components": {
            "schemas": {
                **request_components,
                "Error": _ERROR_SCHEMA,
                "TeiError": _TEI_ERROR_SCHEMA,
            },
            "responses": {
                "Error": {
                    "description": "The OpenAI error envelope",
                    **_json({"$ref": "#/components/schemas/Error"}),
                },
                "TeiError": {
                    "description": "TEI's error body",
                    **_json({"$ref": "#/components/schemas/TeiError"}),
                },
            },
        },
    }
    if settings.api_keys or settings.api_key_file:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    else:
        for path in document["paths"].values():
            for operation in path.values():
                operation.pop("security", None)
                operation["responses"].pop("401", None)
    return document
