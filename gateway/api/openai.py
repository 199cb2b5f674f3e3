"""OpenAI's API: `POST /v1/embeddings` and `GET /v1/models[/{id}]` (also without `/v1`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StrictBool
from pydantic_core import ErrorDetails
from starlette.responses import Response

from gateway.api import compact
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
    TokenId,
    Truncate,
    Wire,
    one_of,
    parse,
    shapes,
)
from gateway.config import Settings
from gateway.errors import APIError, ErrorKind, brief, invalid
from gateway.http.body import read_json
from gateway.http.responses import json_response, truncation_header
from gateway.serving import outputs, token_costs
from gateway.serving.embedding import EmbedJob, embed
from gateway.serving.encoding import check_dimensions
from gateway.serving.guard import Guard
from gateway.serving.inputs import Inputs
from gateway.state import GatewayRequest, registry_of

ENCODING_FORMATS = ("float", "base64")
# `created` of every model: when the server started.
_STARTED = int(time.time())

_INPUT_SHAPES = (
    "a string, a list of strings, a list of token ids (integers), or a list of token-id lists"
)


def _input_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return "a string"
    if not isinstance(value, list) or not value:
        return None
    first = value[0]
    if isinstance(first, int):
        return "list of token ids"
    return "list of token id lists" if isinstance(first, list) else "list of strings"


def _input_wording(error: ErrorDetails) -> str:
    loc, value = error["loc"], error["input"]
    if error["type"] == "missing":
        return f"`input` is required: {_INPUT_SHAPES}"
    if len(loc) == 1:
        if value == []:
            return "`input` must not be an empty list"
        return f"`input` must be {_INPUT_SHAPES}, got {type(value).__name__}"
    shape, index = loc[1], loc[2]
    if error["type"] == "greater_than_equal":  # the same words as the vocabulary checks
        owner = 0 if shape == "list of token ids" else index
        return (
            f"input {owner}: token id {value} is not a cl100k_base token id, nor one of "
            f"any vocabulary (token ids are integers from 0)"
        )
    if shape == "list of token ids":
        return f"`input[{index}]` must be a token id (an integer >= 0), got {brief(value)}"
    if len(loc) == 4:
        return (
            f"`input[{index}]` must be a string or a list of token ids (integers); "
            f"`input[{index}][{loc[3]}]` is {brief(value)}"
        )
    if isinstance(value, (str, list)):
        return "`input` mixes strings and token-id lists; send one kind per request"
    return (
        f"`input[{index}]` must be a string or a list of token ids (integers), got "
        f"{type(value).__name__}"
    )


# Built at runtime (shapes() makes a tagged union), so to mypy a value, not a type.
Input: Any = Annotated[
    shapes(
        _input_shape,
        a_string=Text,
        list_of_strings=Annotated[list[Text], Field(min_length=1), Limit("max_inputs")],
        list_of_token_ids=Annotated[list[TokenId], Field(min_length=1)],
        list_of_token_id_lists=Annotated[
            list[list[TokenId]], Field(min_length=1), Limit("max_inputs")
        ],
    ),
    Says(_input_wording),
]


class EmbeddingsRequest(Wire):
    """`POST /v1/embeddings`: the OpenAI contract, plus vLLM's `truncate_prompt_tokens`, our
    `input_type` and `truncate`, Voyage's and Jina's fields for compact vectors
    (`gateway.api.compact`), and FlagEmbedding's `return_dense`, `return_sparse` and
    `return_colbert_vecs` (each item's `embedding`, `sparse_embedding` and `colbert_vecs`,
    all from the same prompts; the compact fields apply to `embedding` only)."""

    model: Model
    input: Input
    encoding_format: one_of(ENCODING_FORMATS) = "float"  # type: ignore[valid-type]
    dimensions: PositiveInt | None = None
    input_type: InputType | None = None
    truncate: Truncate | None = None
    truncate_prompt_tokens: TokenCap | None = None
    return_dense: bool = True
    return_sparse: bool = False
    return_colbert_vecs: bool = False
    # Accepted and ignored, as any unknown field (OpenAI's end-user id).
    user: Any = None
    # Voyage's: the vector's type, its dimension (as `dimensions`), and its length policy.
    output_dtype: one_of(compact.DTYPES) | None = None  # type: ignore[valid-type]
    output_dimension: PositiveInt | None = None
    voyage_truncation: StrictBool | None = Field(default=None, alias="truncation")
    # Jina's: the vector's type or base64, raw vectors, the prompt by task; late chunking
    # is refused.
    embedding_type: one_of(compact.EMBEDDING_TYPES) | None = None  # type: ignore[valid-type]
    normalized: StrictBool = True
    task: one_of(tuple(compact.TASKS)) | None = None  # type: ignore[valid-type]
    late_chunking: StrictBool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs asked for, in `OUTPUTS` names."""
        wanted = (
            ("dense", self.return_dense),
            ("sparse", self.return_sparse),
            ("multivector", self.return_colbert_vecs),
        )
        return tuple(name for name, asked in wanted if asked)

    @property
    def inputs(self) -> Inputs:
        """One entry per input: a lone string or a lone token-id list made a list of one."""
        value: str | list[int] | Inputs = self.input
        if isinstance(value, str):
            return [value]
        if isinstance(value[0], int):
            return [value]
        return value


class Usage(Answer):
    prompt_tokens: int
    total_tokens: int


class SparseEmbedding(Answer):
    """Non-zero weights by token id of the model's vocabulary, ids ascending."""

    indices: list[int]
    values: list[float]


class Embedding(Answer):
    object: Literal["embedding"]
    index: int
    # A float32 row; an integer row (`output_dtype`, `embedding_type`: int8, uint8, binary,
    # ubinary); or the row's bytes in base64 (little-endian float32, or the integers' bytes);
    # null with `"return_dense": false`.
    embedding: (
        list[float] | list[int] | Annotated[str, Field(json_schema_extra={"format": "byte"})] | None
    )
    # With `return_sparse`.
    sparse_embedding: SparseEmbedding | None = None
    # With `return_colbert_vecs`: one float vector per token (never base64).
    colbert_vecs: list[list[float]] | None = None


class EmbeddingsResponse(Answer):
    """`POST /v1/embeddings`: one embedding per input, in input order."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(Answer):
    """A served name or alias; `root` is the model it serves."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str


class ModelList(Answer):
    """`GET /v1/models`."""

    object: Literal["list"]
    data: list[ModelCard]


def parse_embeddings_request(body: Any, settings: Settings) -> EmbeddingsRequest:
    return parse(EmbeddingsRequest, body, settings)


def embeddings_response(
    model: str, embeddings: Sequence[Any], prompt_tokens: int
) -> dict[str, Any]:
    """The OpenAI list shape; `embeddings[i]` is a float32 or integer row or a base64 string."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_response(names: Sequence[tuple[str, str]], created: int) -> dict[str, Any]:
    """`GET /v1/models`: one entry per served name or alias, `root` the model it serves."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "embedding-gateway",
                "root": root,
            }
            for name, root in names
        ],
    }


async def create_embeddings(request: GatewayRequest) -> Response:
    """POST /v1/embeddings: the OpenAI embeddings contract."""
    body, headers = await answer_embeddings(await read_json(request), guard_of(request))
    if body["data"] and "colbert_vecs" in body["data"][0]:
        # About one row per token read: a large answer is built off the event loop.
        tokens = body["usage"]["prompt_tokens"]
        return await token_costs.built(tokens, lambda: json_response(body, headers=headers))
    return json_response(body, headers=headers)


async def answer_embeddings(body: Any, guard: Guard) -> tuple[dict[str, Any], dict[str, str]]:
    """The answer to an embeddings body and its headers (a route's or a batch line's)."""
    req = parse_embeddings_request(body, guard.settings)
    out = compact.output_of(req)
    served = guard.registry.resolve(req.model)
    check_dimensions(out.dimensions, served.engine.facts.dimension, param=out.dimensions_param)
    job = EmbedJob(
        served, req.model, req.inputs, out.input_type, out.truncation, normalize=out.normalize
    )
    if req.outputs == ("dense",):
        batch = await embed(job, guard)
        data = compact.rows(batch.vectors, out)
        return embeddings_response(req.model, data, batch.total_tokens), truncation_header(batch)
    if not req.outputs:
        raise invalid(
            "ask for at least one output: `return_dense`, `return_sparse` or `return_colbert_vecs`",
            param="return_dense",
        )
    computed = await outputs.compute(job, guard, req.outputs)
    answer = embeddings_response(req.model, [None] * len(req.inputs), computed.total_tokens)
    if computed.dense is not None:
        for item, row in zip(answer["data"], compact.rows(computed.dense.vectors, out)):
            item["embedding"] = row
    if computed.sparse is not None:
        for item, sparse in zip(answer["data"], computed.sparse.vectors):
            item["sparse_embedding"] = {"indices": sparse.indices, "values": sparse.values}
    if computed.tokens is not None:
        for item, matrix in zip(answer["data"], computed.tokens.matrices):
            item["colbert_vecs"] = np.ascontiguousarray(matrix, dtype="<f4")
    return answer, truncation_header(computed)


async def list_models(request: GatewayRequest) -> Response:
    """GET /v1/models: every served name and alias, in the OpenAI list shape."""
    return json_response(models_response(list(registry_of(request).names()), _STARTED))


async def retrieve_model(request: GatewayRequest) -> Response:
    """GET /v1/models/{id}: one served name or alias (openai `client.models.retrieve`)."""
    wanted = request.path_params["model"]
    for name, root in registry_of(request).names():
        if name == wanted:
            return json_response(
                {
                    "id": name,
                    "object": "model",
                    "created": _STARTED,
                    "owned_by": "embedding-gateway",
                    "root": root,
                }
            )
    raise APIError(
        ErrorKind.MODEL_NOT_FOUND, f"The model {brief(wanted)} does not exist", param="model"
    )
