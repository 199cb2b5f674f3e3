"""Cohere's embed API (`POST /v1/embed`, `/v2/embed`): request parsing, embedding types, and
the response shapes `cohere.Client.embed` and `cohere.ClientV2.embed` read.

Embedding types, from the float vector x (unit length, after `output_dimension`):
- `float`: x. `base64`: x as little-endian float32 bytes, base64 (the OpenAI layout).
- `int8`: round(x * 127 / r) clipped to -128..127, with r = 8 / sqrt(d) for dimension d: the
  scale is the same for every vector (so dot products rank as the floats do) and covers eight
  standard deviations of a component of a random unit vector; rarer larger components clip.
  `uint8`: the int8 value + 128.
- `ubinary`: one bit per dimension, 1 where x > 0, packed eight to a byte with the first
  dimension in the highest bit (numpy.packbits, as sentence-transformers and Cohere pack);
  `binary`: the same bytes as signed int8 (ubinary - 128).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gateway.errors import invalid
from gateway.schemas import (
    Length,
    optional_int,
    parse_input_type,
    parse_length,
    require_model,
    require_object,
)

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


@dataclass(frozen=True)
class CohereEmbedRequest:
    """A validated Cohere embed body. `by_type` is False only for a v1 request without
    `embedding_types`, which Cohere answers with a plain list of float vectors."""

    model: str
    texts: list[str]
    input_type: str | None
    embedding_types: tuple[str, ...]
    by_type: bool
    output_dimension: int | None
    length: Length


def parse_cohere_embed(body: Any, *, version: int) -> CohereEmbedRequest:
    body = require_object(body)
    model = require_model(body)
    texts = body.get("texts")
    if texts is None and (body.get("images") is not None or body.get("inputs") is not None):
        raise invalid("only `texts` can be embedded here; `images` and `inputs` are not "
                      "supported", param="texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("`texts` is required: a non-empty list of strings", param="texts")
    types = body.get("embedding_types")
    by_type = types is not None or version >= 2
    if types is None:
        types = ["float"]
    if (not isinstance(types, list) or not types
            or not all(isinstance(t, str) and t in EMBEDDING_TYPES for t in types)):
        raise invalid(f"`embedding_types` must be a non-empty list of {list(EMBEDDING_TYPES)}, "
                      f"got {types!r}", param="embedding_types")
    return CohereEmbedRequest(
        model=model, texts=texts, input_type=parse_input_type(body),
        embedding_types=tuple(dict.fromkeys(types)), by_type=by_type,
        output_dimension=optional_int(body, "output_dimension", minimum=1),
        length=parse_length(body, max_tokens_field="max_tokens"),
    )


def embed_response(
    req: CohereEmbedRequest, vectors: np.ndarray, *, version: int, input_tokens: int,
    truncated: Sequence[int],
) -> dict:
    embeddings: Any
    if req.by_type:
        embeddings = {kind: convert(vectors, kind) for kind in req.embedding_types}
    else:
        embeddings = convert(vectors, "float")
    meta: dict[str, Any] = {"api_version": {"version": str(version)},
                            "billed_units": {"input_tokens": input_tokens}}
    if truncated:
        meta["warnings"] = [f"inputs {', '.join(map(str, truncated))} were truncated to fit "
                            f"the model's window"]
    return {
        "id": str(uuid.uuid4()),
        "texts": req.texts,
        "embeddings": embeddings,
        "meta": meta,
        "response_type": "embeddings_by_type" if req.by_type else "embeddings_floats",
    }


def convert(vectors: np.ndarray, kind: str) -> Any:
    """One embedding type for every row, in a form orjson writes (numpy rows or strings)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if kind == "float":
        return list(matrix)
    if kind == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in matrix]
    if kind in ("int8", "uint8"):
        quantized = int8(matrix)
        return list(quantized if kind == "int8" else (quantized.astype(np.int16) + 128))
    packed = np.packbits(matrix > 0, axis=1)
    return list(packed if kind == "ubinary" else (packed.astype(np.int16) - 128))


def int8(matrix: np.ndarray) -> np.ndarray:
    scale = 127 * np.sqrt(matrix.shape[1]) / 8
    return np.clip(np.rint(matrix * scale), -128, 127).astype(np.int8)
