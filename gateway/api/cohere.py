"""Cohere's embed API (`POST /v1/embed`, `/v2/embed`): request parsing, the handler, embedding
types, and the response shapes `cohere.Client.embed` and `cohere.ClientV2.embed` read.

Embedding types, from the float vector x (unit length, after `output_dimension`): `float` is
x; `base64` is x as little-endian float32 bytes, base64 (the OpenAI layout); `int8`, `uint8`,
`binary` and `ubinary` are `gateway.serving.quantize`'s (its docstring states the scaling
and the bit order).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field
from starlette.responses import Response

from gateway.api.context import guard_of
from gateway.api.wire import (
    Answer,
    InputType,
    Limit,
    Model,
    PositiveInt,
    Says,
    Text,
    TokenCap,
    Truncate,
    Wire,
    one_of,
    parse,
)
from gateway.config import Settings
from gateway.errors import invalid
from gateway.http.body import read_json
from gateway.http.dialects import dialect_of
from gateway.http.responses import json_response, truncation_header
from gateway.serving.embedding import EmbedJob, embed
from gateway.serving.encoding import (
    base64_rows,
    check_dimensions,
    refuse_non_finite,
    truncate_dimensions,
)
from gateway.serving.inputs import Truncation
from gateway.serving.quantize import quantize
from gateway.state import GatewayRequest, registry_of, settings_of

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


class CohereEmbedRequest(Wire):
    """A Cohere embed body (v1 and v2 share it). A v1 request without `embedding_types` is
    answered with a plain list of float vectors (`by_type`)."""

    model: Model
    texts: Annotated[
        list[Text],
        Field(min_length=1),
        Limit("max_inputs"),
        Says("`texts` is required: a non-empty list of strings"),
    ]
    input_type: InputType | None = None
    embedding_types: (
        Annotated[
            list[one_of(EMBEDDING_TYPES)],  # type: ignore[valid-type]  # a runtime Literal
            Field(min_length=1),
            AfterValidator(lambda types: list(dict.fromkeys(types))),
            Says(
                f"`embedding_types` must be a non-empty list of {list(EMBEDDING_TYPES)}, got "
                "{value}"
            ),
        ]
        | None
    ) = None
    output_dimension: PositiveInt | None = None
    truncate: Truncate | None = None
    max_tokens: TokenCap | None = None

    def by_type(self, version: int) -> bool:
        return self.embedding_types is not None or version >= 2

    @property
    def types(self) -> list[str]:
        return self.embedding_types or ["float"]

    @property
    def truncation(self) -> Truncation:
        return Truncation.of(self.truncate, self.max_tokens)


class ApiVersion(Answer):
    version: str


class CohereBilledUnits(Answer):
    input_tokens: int


class CohereEmbedMeta(Answer):
    api_version: ApiVersion
    billed_units: CohereBilledUnits
    # Which inputs were truncated to fit the model's window, when any were.
    warnings: list[str] | None = None


class CohereEmbedResponse(Answer):
    """v1 without `embedding_types`: a list of float vectors (`embeddings_floats`); otherwise
    one list per embedding type (`embeddings_by_type`): floats, integers (int8, uint8, binary,
    ubinary) or base64 strings."""

    id: str
    texts: list[str]
    embeddings: list[list[float]] | dict[str, list[list[float]] | list[str]]
    meta: CohereEmbedMeta
    response_type: Literal["embeddings_floats", "embeddings_by_type"]


def parse_cohere_embed(body: Any, settings: Settings) -> CohereEmbedRequest:
    if (
        isinstance(body, dict)
        and body.get("texts") is None
        and (body.get("images") is not None or body.get("inputs") is not None)
    ):
        raise invalid(
            "only `texts` can be embedded here; `images` and `inputs` are not supported",
            param="texts",
        )
    return parse(CohereEmbedRequest, body, settings)


async def cohere_embed(request: GatewayRequest) -> Response:
    """POST /v1/embed and /v2/embed: Cohere's embed contract (texts only)."""
    version = dialect_of(request.scope).version
    req = parse_cohere_embed(await read_json(request), settings_of(request))
    served = registry_of(request).resolve(req.model)
    check_dimensions(req.output_dimension, served.engine.facts.dimension, param="output_dimension")
    job = EmbedJob(served, req.model, req.texts, req.input_type, req.truncation)
    batch = await embed(job, guard_of(request))
    vectors = truncate_dimensions(batch.vectors, req.output_dimension)
    refuse_non_finite(vectors)
    body = embed_response(
        req, vectors, version=version, input_tokens=batch.total_tokens, truncated=batch.truncated
    )
    return json_response(body, headers=truncation_header(batch))


def embed_response(
    req: CohereEmbedRequest,
    vectors: np.ndarray,
    *,
    version: int,
    input_tokens: int,
    truncated: Sequence[int],
) -> dict[str, Any]:
    embeddings: Any
    by_type = req.by_type(version)
    if by_type:
        embeddings = {kind: convert(vectors, kind) for kind in req.types}
    else:
        embeddings = convert(vectors, "float")
    meta: dict[str, Any] = {
        "api_version": {"version": str(version)},
        "billed_units": {"input_tokens": input_tokens},
    }
    if truncated:
        inputs = ", ".join(map(str, truncated))
        meta["warnings"] = [f"inputs {inputs} were truncated to fit the model's window"]
    return {
        "id": str(uuid.uuid4()),
        "texts": req.texts,
        "embeddings": embeddings,
        "meta": meta,
        "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
    }


def convert(vectors: np.ndarray, kind: str) -> Any:
    """One embedding type for every row, in a form orjson writes (numpy rows or strings)."""
    if kind == "base64":
        return base64_rows(quantize(vectors, "float"))
    return list(quantize(vectors, kind))
