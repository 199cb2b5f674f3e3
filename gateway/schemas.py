"""Wire shapes: request parsing and validation, and response bodies.

Requests arrive as decoded JSON; `parse_*` functions check them field by field and return
plain dataclasses, raising `APIError` with a message that says what was wrong and what is
allowed. Unknown fields are ignored, as the OpenAI API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from gateway.errors import brief, invalid

ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated `POST /v1/embeddings` body."""

    model: str
    texts: list[str]
    encoding_format: str
    dimensions: int | None


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("`model` is required and must be a non-empty string; GET /v1/models "
                      "lists the served models", param="model")
    return model


def optional_int(body: dict, name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"`{name}` must be an integer, got {type(value).__name__}", param=name)
    if value < minimum:
        raise invalid(f"`{name}` must be at least {minimum}, got {value}", param=name)
    return value


def parse_embeddings_request(body: Any) -> EmbeddingsRequest:
    body = require_object(body)
    model = require_model(body)
    texts = _parse_input(body.get("input"))
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid(f"`encoding_format` must be one of {list(ENCODING_FORMATS)}, got "
                      f"{brief(encoding_format)}", param="encoding_format")
    dimensions = optional_int(body, "dimensions", minimum=1)
    return EmbeddingsRequest(model, texts, encoding_format, dimensions)


def _parse_input(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value is None:
        raise invalid("`input` is required: a string or a list of strings", param="input")
    if not isinstance(value, list):
        raise invalid(f"`input` must be a string or a list of strings, got "
                      f"{type(value).__name__}", param="input")
    if not value:
        raise invalid("`input` must not be an empty list", param="input")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            if _is_token_ids(item):
                raise invalid("token-id inputs (lists of integers) are not supported by this "
                              "server; send the text instead", param="input")
            raise invalid(f"`input[{i}]` must be a string, got {type(item).__name__}",
                          param="input")
    return value


def _is_token_ids(item: Any) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return True
    return isinstance(item, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in item
    )


def embeddings_response(
    model: str, embeddings: Sequence[Any], prompt_tokens: int
) -> dict:
    """The OpenAI list shape; `embeddings[i]` is a float32 row or a base64 string."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_response(names: Sequence[tuple[str, str]], created: int) -> dict:
    """`GET /v1/models`: one entry per served name or alias, `root` the model it serves."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "embedding-gateway",
             "root": root}
            for name, root in names
        ],
    }

