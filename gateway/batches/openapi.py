"""OpenAPI 3 path items for the Files and Batches routes, for gateway/api/openapi.py to merge
into `paths`: the operations and the multipart upload described here; the `POST /v1/batches`
body and the answers generated from their declarations (`gateway.batches.schemas`) by
gateway/api/openapi.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.batches.schemas import BatchList, BatchObject, FileDeleted, FileList, FileObject

# The OpenAI envelope, declared once in gateway/api/openapi.py (the document this merges into).
_ERROR_BODY = {"$ref": "#/components/schemas/Error"}


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


def openapi_paths(
    create_batch: dict[str, Any], answers: Mapping[type, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The path items, with `create_batch` (a schema or $ref) as the batch create body and
    `answers` the schema (or $ref) of each answer shape."""
    file, batch = answers[FileObject], answers[BatchObject]
    return {
        "/v1/files": {
            "post": _operation(
                "Upload a JSONL batch input file (OpenAI Files API)",
                file,
                400,
                413,
                415,
                507,
                body=_UPLOAD,
            ),
            "get": _operation(
                "List files, newest first",
                answers[FileList],
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
            "get": _operation("A file's metadata", file, 404, parameters=[_path("file_id")]),
            "delete": _operation(
                "Delete a file",
                answers[FileDeleted],
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
                batch,
                400,
                404,
                413,
                415,
                body={"application/json": {"schema": create_batch}},
            ),
            "get": _operation(
                "List batches, newest first", answers[BatchList], 400, parameters=_PAGING
            ),
        },
        "/v1/batches/{batch_id}": {
            "get": _operation(
                "A batch's status and counts", batch, 404, parameters=[_path("batch_id")]
            ),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": _operation(
                "Cancel a batch (cancelling, then cancelled; partial results kept)",
                batch,
                400,
                404,
                parameters=[_path("batch_id")],
            ),
        },
    }
