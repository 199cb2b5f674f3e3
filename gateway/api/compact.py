"""Compact vectors on `/v1/embeddings` (and its Batch API lines): how OpenAI's, Voyage's and
Jina's fields for the vector's type, encoding, dimension, prompt and length policy combine
into one `Output`, and the answer's rows.

- dtype: Voyage's `output_dtype` or Jina's `embedding_type` (float, int8, uint8, binary,
  ubinary: `gateway.serving.quantize`); Jina's `embedding_type: base64` is float in base64.
- base64: `encoding_format: base64` (OpenAI, Voyage) or `embedding_type: base64` (Jina); with
  an integer dtype the row's raw bytes (int8 for int8 and binary, uint8 for uint8 and
  ubinary) in base64, which is what Voyage's client decodes.
- dimension: `dimensions` (OpenAI, Jina) or `output_dimension` (Voyage): the Matryoshka cut,
  then renormalised (unless `normalized: false`), before quantising.
- `normalized: false` (Jina): the model's vectors before its normalisation.
- prompt: `input_type` (ours, Voyage's query/document) or Jina's `task`.
- length: `truncate`/`truncate_prompt_tokens` or Voyage's `truncation` (true: cut the end;
  false: an input too long is a 400).

Fields that contradict each other are a 400 naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gateway.errors import invalid
from gateway.serving.encoding import base64_rows, refuse_non_finite, truncate_dimensions
from gateway.serving.inputs import Truncation
from gateway.serving.quantize import DTYPES, quantize

# Jina's `embedding_type`: its float, base64 and bit types, and the integer types as Voyage's.
EMBEDDING_TYPES = ("float", "base64", "int8", "uint8", "binary", "ubinary")
# Jina's `task`, and the `input_type` (prompt) each selects; the others select none.
TASKS = {
    "retrieval.query": "query",
    "retrieval.passage": "document",
    "text-matching": None,
    "classification": None,
    "separation": None,
    "code.query": None,
    "code.passage": None,
}
__all__ = ["DTYPES", "EMBEDDING_TYPES", "TASKS", "Fields", "Output", "output_of", "rows"]


class Fields(Protocol):
    """The request fields `output_of` reads (`openai.EmbeddingsRequest`)."""

    @property
    def model_fields_set(self) -> set[str]: ...

    encoding_format: str
    dimensions: int | None
    input_type: str | None
    truncate: str | None
    truncate_prompt_tokens: int | None
    output_dtype: str | None
    output_dimension: int | None
    voyage_truncation: bool | None
    embedding_type: str | None
    normalized: bool
    task: str | None
    late_chunking: bool


@dataclass(frozen=True)
class Output:
    """What a request asks of its vectors, its prompt and its length policy."""

    dtype: str = "float"
    base64: bool = False
    dimensions: int | None = None
    dimensions_param: str = "dimensions"
    normalize: bool = True
    input_type: str | None = None
    truncation: Truncation = Truncation()


def output_of(req: Fields) -> Output:
    """The request's `Output`, or the 400 that names two fields that contradict each other."""
    if req.late_chunking:
        raise invalid(
            "`late_chunking: true` is not supported: every input is embedded on its own",
            param="late_chunking",
        )
    dtype, base64 = _dtype_of(req)
    if not req.normalized and dtype in ("int8", "uint8"):
        raise invalid(
            f"`normalized: false` cannot be combined with {_dtype_field(req)} {dtype}: the "
            "int8 scale assumes unit vectors",
            param="normalized",
        )
    dimensions, dimensions_param = req.dimensions, "dimensions"
    if req.output_dimension is not None:
        if dimensions is not None and dimensions != req.output_dimension:
            raise _conflict("dimensions", dimensions, "output_dimension", req.output_dimension)
        dimensions, dimensions_param = req.output_dimension, "output_dimension"
    return Output(
        dtype,
        base64,
        dimensions,
        dimensions_param,
        req.normalized,
        _input_type_of(req),
        _truncation_of(req),
    )


def rows(vectors: np.ndarray, output: Output) -> list[Any]:
    """The answer's rows, ready for orjson: numpy rows (floats or integers) or base64 text."""
    refuse_non_finite(vectors)
    if output.normalize:
        vectors = truncate_dimensions(vectors, output.dimensions)
    elif output.dimensions is not None:
        vectors = vectors[:, : output.dimensions]
    quantized = quantize(vectors, output.dtype)
    return base64_rows(quantized) if output.base64 else list(quantized)


def _dtype_of(req: Fields) -> tuple[str, bool]:
    base64 = req.encoding_format == "base64"
    kind = req.embedding_type
    if kind is None:
        return req.output_dtype or "float", base64
    dtype = "float" if kind == "base64" else kind
    if req.output_dtype is not None and req.output_dtype != dtype:
        raise _conflict("output_dtype", req.output_dtype, "embedding_type", kind)
    if kind == "base64":
        if "encoding_format" in req.model_fields_set and not base64:
            raise _conflict("encoding_format", req.encoding_format, "embedding_type", kind)
        return dtype, True
    if base64 and dtype != "float":
        # Jina's integer types are lists; its base64 is `embedding_type: base64` (floats).
        raise invalid(
            f"`encoding_format: base64` cannot be combined with `embedding_type: {kind}` "
            "(integers as a list); for the raw bytes in base64 send `output_dtype` with "
            "`encoding_format: base64`, for the list send `encoding_format: float`",
            param="encoding_format",
        )
    return dtype, base64


def _dtype_field(req: Fields) -> str:
    return "`embedding_type`" if req.embedding_type is not None else "`output_dtype`"


def _input_type_of(req: Fields) -> str | None:
    if req.task is None:
        return req.input_type
    if req.input_type is not None:
        raise _conflict("input_type", req.input_type, "task", req.task)
    return TASKS[req.task]


def _truncation_of(req: Fields) -> Truncation:
    if req.voyage_truncation is None:
        return Truncation.of(req.truncate, req.truncate_prompt_tokens)
    truncate = "end" if req.voyage_truncation else "none"
    if req.truncate is not None and req.truncate != truncate:
        raise _conflict("truncate", req.truncate, "truncation", req.voyage_truncation)
    if not req.voyage_truncation and req.truncate_prompt_tokens is not None:
        raise _conflict("truncate_prompt_tokens", req.truncate_prompt_tokens, "truncation", False)
    return Truncation.of(truncate, req.truncate_prompt_tokens)


def _conflict(first: str, first_value: Any, second: str, second_value: Any) -> Exception:
    def shown(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return invalid(
        f"`{first}: {shown(first_value)}` and `{second}: {shown(second_value)}` contradict "
        "each other; send one of them",
        param=second,
    )
