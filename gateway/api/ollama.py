"""Ollama's API for embeddings, as its clients call it (the `ollama` Python client, LangChain
`OllamaEmbeddings`, LlamaIndex `OllamaEmbedding`): `POST /api/embed`, the older
`POST /api/embeddings`, `GET /api/tags`, `POST /api/show`, `GET /api/ps` and
`GET /api/version`, with the shapes of Ollama's docs/api.md.

A model is named as served or with Ollama's `:latest` tag (`all-MiniLM-L6-v2:latest` is
`all-MiniLM-L6-v2`). `/api/embed` answers unit vectors whatever the model's own
normalisation, as Ollama does; `truncate` (default true) cuts the end of an input longer than
the model's window, false refuses it with a 400. `keep_alive` and `options` are accepted and
change nothing: engines stay loaded for the server's life and their settings are the server's.
Errors are Ollama's `{"error": message}` (`gateway.errors`), limits those of every route.
Ollama has no rerank API; Ollama-speaking applications rerank through `/v1/rerank`.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic
from pydantic import Field
from starlette.responses import Response

from gateway.api.context import guard_of
from gateway.api.wire import Answer, Limit, Says, ServedName, Text, Wire, parse, shapes
from gateway.errors import APIError, ErrorKind, brief
from gateway.http.body import read_json
from gateway.http.request_context import timing
from gateway.http.responses import json_response, truncation_header
from gateway.serving.embedding import EmbedJob, embed
from gateway.serving.encoding import (
    check_dimensions,
    encode_vectors,
    truncate_dimensions,
    unit_rows,
)
from gateway.serving.inputs import Truncation
from gateway.serving.registry import ModelRegistry, ServedModel
from gateway.state import GatewayRequest, registry_of, settings_of

# The Ollama release whose embedding API this mirrors (`dimensions` on /api/embed); clients
# read /api/version to decide which endpoints a server has.
OLLAMA_VERSION = "0.12.0"
_TAG = ":latest"
# `modified_at` of every model: when the server started.
_STARTED = int(time.time())

OllamaName = Annotated[
    str,
    Field(min_length=1),
    ServedName(),
    Says("`{name}` is required and must be a non-empty string; GET /api/tags lists the models"),
]


def _input_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return "a string"
    return "list of strings" if isinstance(value, list) else None


# Built at runtime (shapes() makes a tagged union), so to mypy a value, not a type.
EmbedInput: Any = Annotated[
    shapes(
        _input_shape,
        a_string=Text,
        list_of_strings=Annotated[list[Text], Limit("max_inputs")],
    ),
    Says("`input` must be a string or a list of strings, got {value}"),
]


class OllamaEmbedRequest(Wire):
    """`POST /api/embed`. An empty `input` ("" or []) embeds nothing, as Ollama answers it."""

    model: OllamaName
    input: EmbedInput = ""
    truncate: bool = True
    # 0 is Go's zero value, which Ollama reads as "all of them".
    dimensions: Annotated[int, Field(ge=0)] | None = None
    keep_alive: Any = None
    options: Any = None

    @property
    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input] if self.input else []
        return list(self.input)


class OllamaEmbeddingsRequest(Wire):
    """`POST /api/embeddings`: Ollama's older, one-text embed."""

    model: OllamaName
    prompt: Text = ""
    keep_alive: Any = None
    options: Any = None


class OllamaShowRequest(Wire):
    """`POST /api/show`: `model` (older clients send `name`)."""

    model: OllamaName
    verbose: bool = False

    @pydantic.model_validator(mode="before")
    @classmethod
    def _name_is_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model") is None and "name" in data:
            return {**data, "model": data["name"]}
        return data


# -- response shapes --------------------------------------------------------------------------


class OllamaEmbedResponse(Answer):
    """`POST /api/embed`: unit vectors, durations in nanoseconds since the request arrived."""

    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int  # engines load at start-up, never per request: 0
    prompt_eval_count: int


class OllamaEmbeddingResponse(Answer):
    """`POST /api/embeddings`: the model's own vector (empty for an empty prompt)."""

    embedding: list[float]


class OllamaDetails(Answer):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(Answer):
    """A served name or alias, tagged `:latest`."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaDetails


class OllamaRunningModel(OllamaModel):
    """A model whose engine is ready; loaded for the server's life."""

    expires_at: str
    size_vram: int
    context_length: int


class OllamaTags(Answer):
    """`GET /api/tags`."""

    models: list[OllamaModel]


class OllamaRunning(Answer):
    """`GET /api/ps`."""

    models: list[OllamaRunningModel]


class OllamaShowResponse(Answer):
    """`POST /api/show`: details, dimension and window of one model."""

    license: str
    modelfile: str
    parameters: str
    template: str
    details: OllamaDetails
    model_info: dict[str, str | int]
    capabilities: list[str]
    modified_at: str


class OllamaVersion(Answer):
    """`GET /api/version`: the Ollama API version mirrored."""

    version: str


class OllamaErrorBody(Answer):
    """Every error's body on Ollama's routes; its clients raise `error` as the message."""

    error: str


# -- handlers ---------------------------------------------------------------------------------


async def api_embed(request: GatewayRequest) -> Response:
    """POST /api/embed: unit vectors for every input, with Ollama's durations (ns)."""
    req = parse(OllamaEmbedRequest, await read_json(request), settings_of(request))
    served, name = resolve(registry_of(request), req.model)
    dimensions = req.dimensions or None
    check_dimensions(dimensions, served.engine.facts.dimension)
    if not req.texts:
        return json_response(_embed_answer(request, req.model, [], 0))
    truncation = Truncation("end" if req.truncate else "none")
    batch = await embed(EmbedJob(served, name, req.texts, truncation=truncation), guard_of(request))
    vectors = encode_vectors(unit_rows(truncate_dimensions(batch.vectors, dimensions)), "float")
    body = _embed_answer(request, req.model, vectors, batch.total_tokens)
    return json_response(body, headers=truncation_header(batch))


async def api_embeddings(request: GatewayRequest) -> Response:
    """POST /api/embeddings: `{"embedding"}`, the model's own vector (Ollama does not
    renormalise here); a long prompt is cut at the end, as /api/embed's default."""
    req = parse(OllamaEmbeddingsRequest, await read_json(request), settings_of(request))
    served, name = resolve(registry_of(request), req.model)
    if not req.prompt:
        return json_response({"embedding": []})
    job = EmbedJob(served, name, [req.prompt], truncation=Truncation("end"))
    batch = await embed(job, guard_of(request))
    (vector,) = encode_vectors(batch.vectors, "float")
    return json_response({"embedding": vector}, headers=truncation_header(batch))


async def api_tags(request: GatewayRequest) -> Response:
    """GET /api/tags: every served name and alias, tagged `:latest`."""
    registry = registry_of(request)
    by_name = {m.name: m for m in registry.models}
    tagged = _tagged(dict(registry.names()))
    return json_response({"models": [_entry(tag, by_name[root]) for tag, root in tagged]})


async def api_show(request: GatewayRequest) -> Response:
    """POST /api/show: one model's details."""
    req = parse(OllamaShowRequest, await read_json(request), settings_of(request))
    served, _ = resolve(registry_of(request), req.model)
    facts = served.engine.facts
    return json_response(
        {
            "license": "",
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": _details(served),
            "model_info": {
                "general.architecture": "embedding-gateway",
                "general.basename": served.name,
                "embedding-gateway.embedding_length": facts.dimension,
                "embedding-gateway.context_length": facts.max_model_len,
            },
            "capabilities": [] if facts.scores_pairs else ["embedding"],
            "modified_at": _timestamp(_STARTED),
        }
    )


async def api_ps(request: GatewayRequest) -> Response:
    """GET /api/ps: the models whose engines are ready (loaded for the server's life)."""
    registry = registry_of(request)
    states = await registry.readiness()
    running = [
        {
            **_entry(m.name + _TAG, m),
            "expires_at": "9999-12-31T23:59:59Z",
            "size_vram": 0,
            "context_length": m.engine.facts.max_model_len,
        }
        for m in registry.models
        if states.get(m.name) == "ready"
    ]
    return json_response({"models": running})


async def api_version(request: GatewayRequest) -> Response:
    """GET /api/version: the Ollama API version mirrored."""
    return json_response({"version": OLLAMA_VERSION})


def resolve(registry: ModelRegistry, name: str) -> tuple[ServedModel, str]:
    """The served model for an Ollama model name (as served, or with `:latest`) and the name
    without the tag, which applies a virtual name's prompt; a 404 otherwise."""
    served = dict(registry.names())
    for candidate in (name, name.removesuffix(_TAG)):
        if candidate in served:
            return registry.resolve(candidate), candidate
    raise APIError(
        ErrorKind.MODEL_NOT_FOUND,
        f"model {brief(name)} not found; served models: {[tag for tag, _ in _tagged(served)]}",
        param="model",
    )


def _embed_answer(
    request: GatewayRequest, model: str, embeddings: list[Any], tokens: int
) -> dict[str, Any]:
    seconds = time.perf_counter() - timing(request).started
    return {
        "model": model,
        "embeddings": embeddings,
        "total_duration": int(seconds * 1e9),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


def _tagged(names: dict[str, str]) -> list[tuple[str, str]]:
    return [(name if ":" in name else name + _TAG, root) for name, root in names.items()]


def _entry(tagged: str, served: ServedModel) -> dict[str, Any]:
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": _timestamp(_STARTED),
        "size": 0,
        "digest": hashlib.sha256(served.engine.spec.model.encode()).hexdigest(),
        "details": _details(served),
    }


def _details(served: ServedModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": served.name,
        "families": [served.name],
        "parameter_size": "",
        "quantization_level": served.engine.spec.dtype.upper(),
    }


def _timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
