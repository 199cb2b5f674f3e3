"""The OpenAPI 3 description served at /openapi.json: every route, request, response and error
shape, assembled from the declarations beside each handler.

Request bodies are generated from the declarations the routes parse with, so the document
cannot drift from what is accepted; limits from the settings (inputs per request, rerank
documents, served model names) appear as schema constraints, so a schema fuzzer's "valid"
requests are ones the server accepts. Responses are generated from each dialect's response
shapes (`Answer`). Tests check that every route is described with its methods, that every
documented request field and constraint holds, and that every route's live answer matches
its documented response (tests/gateway/api/test_openapi.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from gateway.api import ollama, openai, probes, tei, vllm
from gateway.api.cohere import CohereEmbedRequest, CohereEmbedResponse
from gateway.api.openai import EmbeddingsRequest
from gateway.api.rerank import RERANK_PATHS, RerankRequest, RerankResponse
from gateway.api.texts import TextsEmbedRequest, TextsEmbedResponse
from gateway.api.wire import ErrorEnvelope, Wire, request_schemas, response_schemas
from gateway.batches import CreateBatchRequest, openapi_paths
from gateway.batches.schemas import ANSWERS as BATCH_ANSWERS
from gateway.config import Settings
from gateway.state import GatewayRequest, registry_of, settings_of

_ERROR = {"$ref": "#/components/responses/Error"}
_TEI_ERROR = {"$ref": "#/components/responses/TeiError"}
_OLLAMA_ERROR = {"$ref": "#/components/responses/OllamaError"}
# A path TEI shares with another API: the error body is the one of the API the body speaks.
_EITHER_ERROR = {"$ref": "#/components/responses/EitherError"}


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
    body's fields, as gateway/http/dialects.py says)."""
    return {"anyOf": list(refs)}


_ANSWERS: tuple[type[BaseModel], ...] = (
    openai.EmbeddingsResponse,
    openai.ModelList,
    openai.ModelCard,
    CohereEmbedResponse,
    RerankResponse,
    TextsEmbedResponse,
    tei.TeiEmbeddings,
    tei.TeiSparseEmbeddings,
    tei.TeiTokenEmbeddings,
    tei.TeiPredictions,
    tei.TeiRanks,
    tei.TeiSimilarities,
    tei.TeiTokens,
    tei.TeiDecoded,
    tei.TeiInfo,
    tei.TeiErrorBody,
    vllm.ScoreResponse,
    vllm.PoolingResponse,
    vllm.ClassificationResponse,
    vllm.VllmTokenizeResponse,
    vllm.DetokenizeResponse,
    ollama.OllamaEmbedResponse,
    ollama.OllamaEmbeddingResponse,
    ollama.OllamaTags,
    ollama.OllamaShowResponse,
    ollama.OllamaRunning,
    ollama.OllamaVersion,
    ollama.OllamaErrorBody,
    probes.Health,
    probes.Readiness,
    ErrorEnvelope,
    *BATCH_ANSWERS,
)
_DECLARED = (
    EmbeddingsRequest,
    CohereEmbedRequest,
    RerankRequest,
    TextsEmbedRequest,
    tei.TeiEmbedRequest,
    tei.TeiEmbedSparseRequest,
    tei.TeiEmbedAllRequest,
    tei.TeiPredictRequest,
    tei.TeiRerankRequest,
    tei.TeiSimilarityRequest,
    tei.TeiTokenizeRequest,
    tei.TeiDecodeRequest,
    vllm.ScoreTextRequest,
    vllm.ScoreQueriesRequest,
    vllm.PoolingRequest,
    vllm.ClassifyRequest,
    vllm.VllmTokenizeRequest,
    vllm.DetokenizeRequest,
    CreateBatchRequest,
    ollama.OllamaEmbedRequest,
    ollama.OllamaEmbeddingsRequest,
    ollama.OllamaShowRequest,
)
_ERRORS = (400, 404, 413, 415, 429, 503, 504)
_TEI_ERRORS = (413, 415, 422, 424, 429, 503)
_SHARED_ERRORS = tuple(sorted(set(_ERRORS) | set(_TEI_ERRORS)))


def _native_paths(
    bodies: dict[type[Wire], dict[str, Any]], answers: dict[type[BaseModel], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The routes of other servers' dialects (TEI, vLLM, the plain texts API)."""

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
        answers[vllm.ScoreResponse],
        body=_either(bodies[vllm.ScoreTextRequest], bodies[vllm.ScoreQueriesRequest]),
        errors=_ERRORS,
    )
    retrieve = _operation(
        "One served model (openai `models.retrieve`)", answers[openai.ModelCard], errors=(404,)
    )
    retrieve["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    return {
        "/embed": {
            "post": _operation(
                "Embed texts: the plain texts API's `{texts}` -> `{embeddings}` (errors: the OpenAI "
                "envelope plus `detail`), or TEI's `{inputs}` -> `[[f32]]` (TEI's errors)",
                _either(answers[TextsEmbedResponse], answers[tei.TeiEmbeddings]),
                body=_either(tei_embed, bodies[TextsEmbedRequest]),
                errors=_SHARED_ERRORS,
                error=_EITHER_ERROR,
            )
        },
        "/": {
            "post": tei_op(
                "TEI's default route: similarity (`inputs` object), rerank (`texts`), else what "
                "the model serves: predict for a classifier, embed_sparse for a sparse-only "
                "model, else embed",
                _either(
                    answers[tei.TeiEmbeddings],
                    answers[tei.TeiSimilarities],
                    answers[tei.TeiRanks],
                    answers[tei.TeiPredictions],
                    answers[tei.TeiSparseEmbeddings],
                ),
                _either(
                    tei_embed,
                    bodies[tei.TeiSimilarityRequest],
                    bodies[tei.TeiRerankRequest],
                    bodies[tei.TeiPredictRequest],
                    bodies[tei.TeiEmbedSparseRequest],
                ),
            )
        },
        "/embed_sparse": {
            "post": tei_op(
                "Sparse vectors: each input's non-zero weights by token id",
                answers[tei.TeiSparseEmbeddings],
                bodies[tei.TeiEmbedSparseRequest],
            )
        },
        "/embed_all": {
            "post": tei_op(
                "Token vectors: one vector per token of each input (at most "
                "--max-token-vectors tokens per request)",
                answers[tei.TeiTokenEmbeddings],
                bodies[tei.TeiEmbedAllRequest],
            )
        },
        "/predict": {
            "post": tei_op(
                "Label scores of a text, a (text, text_pair) pair, or a batch of them, best first",
                answers[tei.TeiPredictions],
                bodies[tei.TeiPredictRequest],
            )
        },
        "/similarity": {
            "post": tei_op(
                "Cosine of each sentence with the source sentence",
                answers[tei.TeiSimilarities],
                bodies[tei.TeiSimilarityRequest],
            )
        },
        "/tokenize": {
            "post": _operation(
                "Tokenize: TEI's `{inputs}` -> `[[token]]` (TEI's errors) or vLLM's `{prompt}` -> "
                "`{count, max_model_len, tokens, token_strs}`",
                _either(answers[tei.TeiTokens], answers[vllm.VllmTokenizeResponse]),
                body=_either(bodies[tei.TeiTokenizeRequest], bodies[vllm.VllmTokenizeRequest]),
                errors=_SHARED_ERRORS,
                error=_EITHER_ERROR,
            )
        },
        "/decode": {
            "post": tei_op(
                "Token ids back to text",
                answers[tei.TeiDecoded],
                bodies[tei.TeiDecodeRequest],
            )
        },
        "/info": {"get": tei_op("The default model and the server's limits", answers[tei.TeiInfo])},
        "/score": {"post": score},
        "/v1/score": {"post": score},
        "/detokenize": {
            "post": _operation(
                "Token ids back to text (vLLM)",
                answers[vllm.DetokenizeResponse],
                body=bodies[vllm.DetokenizeRequest],
                errors=_ERRORS,
            )
        },
        "/pooling": {
            "post": _operation(
                "A model output per input (vLLM's /pooling): `task` embed, token_embed or classify",
                answers[vllm.PoolingResponse],
                body=bodies[vllm.PoolingRequest],
                errors=_ERRORS,
            )
        },
        "/classify": {
            "post": _operation(
                "Label scores per text, with the best label (vLLM's /classify)",
                answers[vllm.ClassificationResponse],
                body=bodies[vllm.ClassifyRequest],
                errors=_ERRORS,
            )
        },
        "/v1/models/{model}": {"get": retrieve},
        "/models/{model}": {"get": retrieve},
    }


def _ollama_paths(
    bodies: dict[type[Wire], dict[str, Any]], answers: dict[type[BaseModel], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Ollama's routes (gateway/api/ollama.py); errors are Ollama's `{error}`."""

    def op(summary: str, ok: type[BaseModel], body: type[Wire] | None = None) -> dict[str, Any]:
        return _operation(
            summary + " (Ollama)",
            answers[ok],
            body=None if body is None else bodies[body],
            errors=_ERRORS if body is not None else (),
            error=_OLLAMA_ERROR,
        )

    return {
        "/api/embed": {
            "post": op(
                "Unit vectors for `input`, with durations in nanoseconds",
                ollama.OllamaEmbedResponse,
                ollama.OllamaEmbedRequest,
            )
        },
        "/api/embeddings": {
            "post": op(
                "One vector for `prompt` (Ollama's older embed)",
                ollama.OllamaEmbeddingResponse,
                ollama.OllamaEmbeddingsRequest,
            )
        },
        "/api/tags": {"get": op("The served models, tagged `:latest`", ollama.OllamaTags)},
        "/api/show": {
            "post": op("One model's details", ollama.OllamaShowResponse, ollama.OllamaShowRequest)
        },
        "/api/ps": {"get": op("The loaded models", ollama.OllamaRunning)},
        "/api/version": {"get": op("The Ollama API version mirrored", ollama.OllamaVersion)},
    }


def openapi_document(settings: Settings, models: Sequence[str] = ()) -> dict[str, Any]:
    """The document for an app with these settings serving these model names."""
    bodies, request_components = request_schemas(_DECLARED, settings, models)
    answers, answer_components = response_schemas(_ANSWERS)
    clash = request_components.keys() & answer_components.keys()
    assert not clash, f"request and response shapes share the names {clash}"
    embeddings = _operation(
        "Create embeddings (OpenAI contract)",
        answers[openai.EmbeddingsResponse],
        body=bodies[EmbeddingsRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    cohere_embed = _operation(
        "Embed texts (Cohere embed contract, v1 and v2 shapes)",
        answers[CohereEmbedResponse],
        body=bodies[CohereEmbedRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    rerank = _operation(
        "Rerank documents for a query (Cohere v1/v2 and Jina shapes; errors on these paths "
        "also carry a top-level `detail`)",
        answers[RerankResponse],
        body=bodies[RerankRequest],
        errors=(400, 404, 413, 415, 429, 503, 504),
    )
    list_models = _operation("List served models and aliases", answers[openai.ModelList])
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
            "(TEI's `{error, error_type}`) and Ollama's (`{error}`).",
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
                    "responses": {
                        **rerank["responses"],
                        **_errors(*_SHARED_ERRORS, error=_EITHER_ERROR),
                        "200": {
                            "description": "OK",
                            **_json(_either(answers[RerankResponse], answers[tei.TeiRanks])),
                        },
                    },
                    "requestBody": {
                        "required": True,
                        **_json(_either(bodies[RerankRequest], bodies[tei.TeiRerankRequest])),
                    },
                }
            },
            "/v1/models": {"get": list_models},
            "/models": {"get": list_models},
            "/health": {
                "get": _operation(
                    "Liveness: the process is up", answers[probes.Health], public=True
                )
            },
            "/ready": {
                "get": _operation(
                    "Readiness: every engine can serve (503 while loading, "
                    "after an engine fault, and while draining)",
                    answers[probes.Readiness],
                    errors=(503,),
                    public=True,
                )
            },
            # A copy: the document is edited below (security), the shared schemas stay as they are.
            **copy.deepcopy(openapi_paths(bodies[CreateBatchRequest], answers)),
            "/metrics": {"get": metrics},
            "/openapi.json": {
                "get": _operation(
                    "This document (public, as /docs)", {"type": "object"}, public=True
                )
            },
            **_native_paths(bodies, answers),
            **_ollama_paths(bodies, answers),
        },
        "components": {
            "schemas": {
                **request_components,
                **answer_components,
                # The names batches/openapi.py and the error responses refer to.
                "Error": answers[ErrorEnvelope],
                "TeiError": answers[tei.TeiErrorBody],
                "OllamaError": answers[ollama.OllamaErrorBody],
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
                "OllamaError": {
                    "description": "Ollama's error body",
                    **_json({"$ref": "#/components/schemas/OllamaError"}),
                },
                "EitherError": {
                    "description": "The OpenAI error envelope, or TEI's error body for TEI's "
                    "request shapes",
                    **_json(
                        _either(
                            {"$ref": "#/components/schemas/Error"},
                            {"$ref": "#/components/schemas/TeiError"},
                        )
                    ),
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


async def openapi(request: GatewayRequest) -> Response:
    """GET /openapi.json: the OpenAPI 3 description of every route, built once per app (its
    settings and model names are fixed once it serves): it is public, and takes about 10 ms
    to build."""
    cached: bytes | None = getattr(request.app.state, "openapi_json", None)
    if cached is None:
        names = [name for name, _ in registry_of(request).names()]
        cached = orjson.dumps(openapi_document(settings_of(request), names))
        request.app.state.openapi_json = cached
    return Response(cached, media_type="application/json")
