"""The Batch API's JSON request shape, declared once (gateway/api/wire.py's conventions): the
`POST /v1/batches` handler parses with it and /openapi.json documents it. Uploads are
multipart forms, checked by their handler."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_core import ErrorDetails

from gateway.api.wire import Says, Wire, one_of
from gateway.errors import brief

# Endpoints a batch may name: OpenAI's embeddings, and the gateway's rerank as an extension.
ENDPOINTS = ("/v1/embeddings", "/v1/rerank")
COMPLETION_WINDOW_S = {"24h": 24 * 3600}
# OpenAI's bounds for `expires_after.seconds` and `output_expires_after.seconds`.
EXPIRY_S = (3600, 30 * 24 * 3600)
_EXPIRY_SHAPE = '`output_expires_after` must be {"anchor": "created_at", "seconds": N}'


def _expiry_wording(error: ErrorDetails) -> str:
    loc = error["loc"]
    if len(loc) < 2 or loc[1] != "seconds":
        return _EXPIRY_SHAPE
    if error["type"] in ("greater_than_equal", "less_than_equal"):
        low, high = EXPIRY_S
        return (
            f"`output_expires_after.seconds` must be between {low} and {high}, got "
            f"{brief(error['input'])}"
        )
    return "`output_expires_after.seconds` must be an integer"


def _endpoint_wording(error: ErrorDetails) -> str:
    got = None if error["type"] == "missing" else error["input"]
    return f"`endpoint` must be one of {list(ENDPOINTS)}, got {brief(got)}"


class OutputExpiry(Wire):
    """When the batch's output and error files expire: `seconds` after they are made."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=EXPIRY_S[0], le=EXPIRY_S[1])]


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
    Says(
        "`metadata` must be an object of at most 16 string values (keys up to 64 characters, "
        "values up to 512)"
    ),
]


class CreateBatchRequest(Wire):
    """`POST /v1/batches`: OpenAI's batch create body."""

    # Checked in this order; the first refused field is the one an error names.
    endpoint: Annotated[Literal[ENDPOINTS], Says(_endpoint_wording)]  # type: ignore[valid-type]
    completion_window: one_of(list(COMPLETION_WINDOW_S))  # type: ignore[valid-type]
    input_file_id: Annotated[str, Says("`input_file_id` is required: the id of an uploaded file")]
    metadata: Metadata | None = None
    output_expires_after: Annotated[OutputExpiry, Says(_expiry_wording)] | None = None

    def output_expiry_s(self, default_s: int) -> int:
        return default_s if self.output_expires_after is None else self.output_expires_after.seconds
