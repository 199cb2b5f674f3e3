"""The Batch API's JSON shapes, declared once (gateway/api/wire.py's conventions): the
`POST /v1/batches` body, which its handler parses with, and the file, batch and list answers
(openai.types.FileObject, Batch), which /openapi.json documents. Uploads are multipart forms,
checked by their handler."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_core import ErrorDetails

from gateway.api.wire import Answer, Says, Wire, one_of
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


# -- answers ----------------------------------------------------------------------------------

Stamp = int | None  # Unix seconds; null until the batch gets there


class FileObject(Answer):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    expires_at: Stamp
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: str
    status_details: str | None = None


class FileList(Answer):
    """Newest first; `has_more` when a next page exists (`after` the last id)."""

    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class FileDeleted(Answer):
    id: str
    object: Literal["file"]
    deleted: bool


class RequestCounts(Answer):
    total: int
    completed: int
    failed: int


class InputTokensDetails(Answer):
    cached_tokens: int


class OutputTokensDetails(Answer):
    reasoning_tokens: int


class BatchUsage(Answer):
    """Tokens read by the batch's lines; embeddings and rerank produce no output tokens."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class BatchObject(Answer):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: Stamp
    in_progress_at: Stamp
    finalizing_at: Stamp
    completed_at: Stamp
    failed_at: Stamp
    expired_at: Stamp
    cancelling_at: Stamp
    cancelled_at: Stamp
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    usage: BatchUsage


class BatchList(Answer):
    """Newest first; `has_more` when a next page exists (`after` the last id)."""

    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


# Every answer shape, for /openapi.json.
ANSWERS = (FileObject, FileList, FileDeleted, BatchObject, BatchList)
