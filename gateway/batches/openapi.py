"""OpenAPI 3 path items for the Files and Batches routes, for gateway/api/openapi.py to merge into
`paths`: the responses and the multipart upload described here, the `POST /v1/batches` body
generated from its declaration (`schemas.CreateBatchRequest`) by gateway/api/openapi.py."""

from __future__ import annotations

from typing import Any

# The OpenAI envelope, declared once in gateway/api/openapi.py (the document this merges into).
_ERROR_BODY = {"$ref": "#/components/schemas/Error"}
_ID = {"type": "string"}
_STAMP = {"type": ["integer", "null"]}
_FILE = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": _ID,
        "object": {"const": "file"},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "expires_at": _STAMP,
        "filename": {"type": "string"},
        "purpose": {"enum": ["batch", "batch_output"]},
        "status": {"type": "string"},
    },
}
_BATCH = {
    "type": "object",
    "required": [
        "id",
        "object",
        "endpoint",
        "input_file_id",
        "completion_window",
        "status",
        "created_at",
        "request_counts",
    ],
    "properties": {
        "id": _ID,
        "object": {"const": "batch"},
        "endpoint": {"type": "string"},
        "input_file_id": _ID,
        "completion_window": {"type": "string"},
        "status": {
            "enum": [
                "validating",
                "failed",
                "in_progress",
                "finalizing",
                "completed",
                "expired",
                "cancelling",
                "cancelled",
            ]
        },
        "output_file_id": {"type": ["string", "null"]},
        "error_file_id": {"type": ["string", "null"]},
        **{
            stamp: _STAMP
            for stamp in (
                "created_at",
                "expires_at",
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        },
        "request_counts": {
            "type": "object",
            "properties": {
                "total": {"type": "integer"},
                "completed": {"type": "integer"},
                "failed": {"type": "integer"},
            },
        },
        "metadata": {"type": ["object", "null"]},
        "errors": {"type": ["object", "null"]},
        "usage": {
            "type": "object",
            "required": [
                "input_tokens",
                "input_tokens_details",
                "output_tokens",
                "output_tokens_details",
                "total_tokens",
            ],
            "properties": {
                "input_tokens": {"type": "integer"},
                "input_tokens_details": {
                    "type": "object",
                    "properties": {"cached_tokens": {"type": "integer"}},
                },
                "output_tokens": {"type": "integer"},
                "output_tokens_details": {
                    "type": "object",
                    "properties": {"reasoning_tokens": {"type": "integer"}},
                },
                "total_tokens": {"type": "integer"},
            },
        },
    },
}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    }


def _operation(
    summary: str,
    ok: dict[str, Any],
    *errors: int,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    ok_type: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {ok_type: {"schema": ok}}}}
    for status in (*errors, 401, 405, 500):
        responses[str(status)] = {
            "description": "The OpenAI error envelope",
            "content": {"application/json": {"schema": _ERROR_BODY}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_PAGING = [
    _query("after", {"type": "string"}),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
]
_UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file", "purpose"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "purpose": {"const": "batch"},
                "expires_after[anchor]": {"const": "created_at"},
                "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
            },
        }
    }
}


def openapi_paths(create_batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The path items, with `create_batch` (a schema or $ref) as the batch create body."""
    return {
        "/v1/files": {
            "post": _operation(
                "Upload a JSONL batch input file (OpenAI Files API)",
                _FILE,
                400,
                413,
                415,
                507,
                body=_UPLOAD,
            ),
            "get": _operation(
                "List files, newest first",
                _list(_FILE),
                400,
                parameters=[
                    *_PAGING[:1],
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                    _query("order", {"enum": ["asc", "desc"]}),
                    _query("purpose", {"type": "string"}),
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "get": _operation("A file's metadata", _FILE, 404, parameters=[_path("file_id")]),
            "delete": _operation(
                "Delete a file",
                {
                    "type": "object",
                    "properties": {
                        "id": _ID,
                        "object": {"const": "file"},
                        "deleted": {"type": "boolean"},
                    },
                },
                400,
                404,
                parameters=[_path("file_id")],
            ),
        },
        "/v1/files/{file_id}/content": {
            "get": _operation(
                "A file's content (JSONL)",
                {"type": "string", "format": "binary"},
                404,
                parameters=[_path("file_id")],
                ok_type="application/octet-stream",
            ),
        },
        "/v1/batches": {
            "post": _operation(
                "Create a batch of /v1/embeddings (or /v1/rerank) requests",
                _BATCH,
                400,
                404,
                413,
                415,
                body={"application/json": {"schema": create_batch}},
            ),
            "get": _operation("List batches, newest first", _list(_BATCH), 400, parameters=_PAGING),
        },
        "/v1/batches/{batch_id}": {
            "get": _operation(
                "A batch's status and counts", _BATCH, 404, parameters=[_path("batch_id")]
            ),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": _operation(
                "Cancel a batch (cancelling, then cancelled; partial results kept)",
                _BATCH,
                400,
                404,
                parameters=[_path("batch_id")],
            ),
        },
    }
