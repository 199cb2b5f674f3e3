"""Wire shapes: request parsing and validation, and response bodies.

Requests arrive as decoded JSON; `parse_*` functions check them field by field and return
plain dataclasses, raising `APIError` with a message that says what was wrong and what is
allowed. Unknown fields are ignored, as the OpenAI API does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

from adapters.base import TRUNCATE_CHOICES
from gateway.errors import brief, invalid

ENCODING_FORMATS = ("float", "base64")
# `input_type` values: ours, Cohere's, and the sentence-transformers prompt names they select.
INPUT_TYPES = ("query", "document", "passage", "search_query", "search_document",
               "classification", "clustering")

# Lone surrogates cannot be encoded as UTF-8 (the tokenizer would fail on them); NUL is
# refused because tokenizers and downstream stores treat it inconsistently.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


# Texts, or token-id lists (one list per input).
Inputs = Union[list[str], list[list[int]]]


@dataclass(frozen=True)
class Length:
    """A request's length policy; None fields fall back to the model's settings."""

    truncate: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated `POST /v1/embeddings` body."""

    model: str
    inputs: Inputs
    encoding_format: str
    dimensions: int | None
    input_type: str | None = None
    length: Length = Length()


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


def parse_input_type(body: dict) -> str | None:
    """`input_type`, lower-cased; None when absent."""
    value = body.get("input_type")
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in INPUT_TYPES:
        raise invalid(f"`input_type` must be one of {list(INPUT_TYPES)}, got {brief(value)}",
                      param="input_type")
    return value.lower()


def parse_length(body: dict, *, max_tokens_field: str) -> Length:
    """`truncate` (none/end/start, any case) and a token cap (vLLM's `truncate_prompt_tokens`,
    Cohere's `max_tokens`; -1 means the model's window). A cap without `truncate` truncates
    the end, as vLLM does."""
    truncate = body.get("truncate")
    if truncate is not None:
        if not isinstance(truncate, str) or truncate.lower() not in TRUNCATE_CHOICES:
            raise invalid(f"`truncate` must be one of {list(TRUNCATE_CHOICES)} (any case), got "
                          f"{brief(truncate)}", param="truncate")
        truncate = truncate.lower()
    cap = body.get(max_tokens_field)
    if cap == -1:
        return Length(truncate or "end", None)
    cap = optional_int(body, max_tokens_field, minimum=1)
    if cap is not None:
        return Length(truncate or "end", cap)
    return Length(truncate, None)


def parse_embeddings_request(body: Any) -> EmbeddingsRequest:
    body = require_object(body)
    model = require_model(body)
    inputs = _parse_input(body.get("input"))
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid(f"`encoding_format` must be one of {list(ENCODING_FORMATS)}, got "
                      f"{brief(encoding_format)}", param="encoding_format")
    dimensions = optional_int(body, "dimensions", minimum=1)
    return EmbeddingsRequest(model, inputs, encoding_format, dimensions,
                             input_type=parse_input_type(body),
                             length=parse_length(body, max_tokens_field="truncate_prompt_tokens"))


_INPUT_SHAPES = ("a string, a list of strings, a list of token ids (integers), or a list of "
                 "token-id lists")


def _parse_input(value: Any) -> Inputs:
    if isinstance(value, str):
        return [value]
    if value is None:
        raise invalid(f"`input` is required: {_INPUT_SHAPES}", param="input")
    if not isinstance(value, list):
        raise invalid(f"`input` must be {_INPUT_SHAPES}, got {type(value).__name__}",
                      param="input")
    if not value:
        raise invalid("`input` must not be an empty list", param="input")
    if all(isinstance(item, str) for item in value):
        return value
    if all(_is_token_id(item) for item in value):
        return [value]  # one input given as its token ids
    if all(isinstance(item, list) and all(_is_token_id(t) for t in item) for item in value):
        return value
    for i, item in enumerate(value):
        if not (isinstance(item, str)
                or isinstance(item, list) and all(_is_token_id(t) for t in item)):
            raise invalid(f"`input[{i}]` must be a string or a list of token ids (integers), "
                          f"got {type(item).__name__}", param="input")
    raise invalid("`input` mixes strings and token-id lists; send one kind per request",
                  param="input")


def _is_token_id(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


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


def check_texts(texts: Sequence[object], *, max_items: int, param: str = "input") -> None:
    """At most `max_items` inputs; no string among them holding NUL or a lone surrogate
    (token-id inputs are checked against the vocabulary by the engine)."""
    if len(texts) > max_items:
        raise invalid(f"`{param}` has {len(texts)} items, but a request may have at most "
                      f"{max_items}", param=param)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        found = _FORBIDDEN.search(text)
        if found:
            what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
            raise invalid(f"`{param}[{i}]` contains {what} at position {found.start()}",
                          param=param)


def check_documents(documents: Sequence[str], max_documents: int) -> None:
    """For rerank: at most `max_documents` documents (GATEWAY_MAX_RERANK_DOCUMENTS), clean
    text. Rerank routes call this, then `admission.run_guarded` with the document count."""
    check_texts(documents, max_items=max_documents, param="documents")
