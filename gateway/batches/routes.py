"""The OpenAI Files and Batches endpoints, for batches of /v1/embeddings (and /v1/rerank).

Thin handlers: validate, read or write the store, answer in OpenAI's object shapes. The
runner (runner.py) does the work. Every file and batch belongs to the key that made it (its
tenant's name); another key gets 404 for it and does not see it listed, as OpenAI scopes
them per project, unless it is an admin key. Ids in paths are checked against the generated-id pattern
and looked up in the database before any file is touched: a client value never reaches the
file system.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import orjson
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.api.wire import parse
from gateway.batches.runner import BatchService
from gateway.batches.schemas import COMPLETION_WINDOW_S, EXPIRY_S, CreateBatchRequest
from gateway.batches.store import (
    Row,
    batch_object,
    file_object,
    is_batch_id,
    is_file_id,
    list_object,
    new_file_id,
    now,
)
from gateway.errors import APIError, ErrorKind, brief, invalid
from gateway.http.body import read_json
from gateway.state import GatewayRequest
from gateway.tenancy.keys import tenant_of
from gateway.tenancy.limits import check_storage

# The upload routes, which the body limit lets carry `--batch-max-file-bytes` (plus room
# for the multipart envelope) instead of `--max-body-bytes`.
UPLOAD_PATHS = ("/v1/files",)
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_COPY_CHUNK = 1 << 20
Endpoint = Callable[[GatewayRequest], Awaitable[Response]]


def _service(request: GatewayRequest) -> BatchService:
    return request.state["batches"]


def _visible_to(request: GatewayRequest) -> str | None:
    """The owner whose records this request may see; None for an admin key: all."""
    tenant = tenant_of(request.scope)
    return None if tenant.admin else tenant.name


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# -- files ----------------------------------------------------------------------------------


async def create_file(request: GatewayRequest) -> Response:
    """POST /v1/files: multipart `file` (JSONL) and `purpose` (`batch`)."""
    service = _service(request)
    settings = service.settings
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise APIError(
            ErrorKind.UNSUPPORTED_MEDIA_TYPE,
            "upload the file as multipart/form-data with the fields `file` and `purpose`",
        )
    store = service.store
    tenant = tenant_of(request.scope)
    announced = int(request.headers.get("content-length") or 0)
    _check_free_space(store.root, announced, settings.batch_min_free_bytes)
    check_storage(
        tenant,
        store.stored_bytes(tenant.name),
        max(announced - MULTIPART_OVERHEAD_BYTES, 0),
        settings.batch_max_stored_bytes,
    )
    async with request.form(max_files=1, max_fields=4) as form:
        purpose = form.get("purpose")
        if purpose != "batch":
            raise invalid(f"`purpose` must be batch, got {brief(purpose)}", param="purpose")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid(
                "`file` is required: the JSONL file, as a multipart file field", param="file"
            )
        ttl = _expires_after(form, settings.batch_file_ttl_s)
        temporary = store.upload_path()
        try:
            size, lines = await asyncio.to_thread(
                _copy, upload.file, temporary, settings.batch_max_file_bytes
            )
            if lines > settings.batch_max_lines:
                raise invalid(
                    f"the file has {lines} lines; a batch file may have at most "
                    f"{settings.batch_max_lines}",
                    param="file",
                )
            file_id = new_file_id()
            # Counted again with the real size, with no await before the record is added.
            check_storage(
                tenant, store.stored_bytes(tenant.name), size, settings.batch_max_stored_bytes
            )
            os.replace(temporary, store.file_path(file_id))
            filename = (upload.filename or "upload.jsonl")[:255]
            row = store.add_file(file_id, filename, "batch", size, _created_plus(ttl), tenant.name)
        finally:
            temporary.unlink(missing_ok=True)
    return _json(file_object(row))


def _check_free_space(root: Path, incoming: int, reserve: int) -> None:
    free = shutil.disk_usage(root).free
    if free - incoming < reserve:
        raise APIError(
            ErrorKind.INSUFFICIENT_STORAGE,
            "the server has not enough free disk space to store this file",
        )


def _copy(source: IO[bytes], target: Path, max_bytes: int) -> tuple[int, int]:
    """Copy an upload into the data folder: (bytes, lines), or 413 past `max_bytes`."""
    size = lines = 0
    last = b"\n"
    source.seek(0)
    # 0600: another local user may not read an upload (the folder is 0700 too).
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise APIError(
                    ErrorKind.PAYLOAD_TOO_LARGE,
                    f"the file is larger than the limit of {max_bytes} bytes",
                    param="file",
                )
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            out.write(chunk)
    return size, lines + (last != b"\n")


def _expires_after(form: Any, default_s: int) -> int:
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default_s
    if anchor != "created_at":
        raise invalid("`expires_after[anchor]` must be created_at", param="expires_after")
    return _seconds(seconds, "expires_after")


def _seconds(value: Any, param: str) -> int:
    # An integer in JSON, or its digits in a form field (never a float: int(inf) overflows).
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError
        seconds = int(value)
    except (TypeError, ValueError):
        raise invalid(f"`{param}.seconds` must be an integer", param=param) from None
    low, high = EXPIRY_S
    if not low <= seconds <= high:
        raise invalid(
            f"`{param}.seconds` must be between {low} and {high}, got {seconds}", param=param
        )
    return seconds


def _created_plus(seconds: int) -> int:
    return now() + seconds


async def list_files(request: GatewayRequest) -> Response:
    """GET /v1/files: newest first by default; `after`, `limit`, `order`, `purpose`."""
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid(f"`order` must be asc or desc, got {brief(order)}", param="order")
    page = _service(request).store.files(
        after=query.get("after"),
        limit=_limit(query.get("limit"), 10_000, 10_000),
        order=order,
        purpose=query.get("purpose"),
        owner=_visible_to(request),
    )
    return _json(list_object([file_object(row) for row in page.rows], page.has_more))


async def retrieve_file(request: GatewayRequest) -> Response:
    """GET /v1/files/{file_id}."""
    return _json(file_object(_file_row(request)))


async def file_content(request: GatewayRequest) -> Response:
    """GET /v1/files/{file_id}/content: the file's bytes."""
    row = _file_row(request)
    path = _service(request).store.file_path(row["id"])
    if not path.exists():
        raise _no_such("File", row["id"])
    return FileResponse(path, media_type="application/octet-stream", filename=row["filename"])


async def delete_file(request: GatewayRequest) -> Response:
    """DELETE /v1/files/{file_id}. A file a live batch reads cannot be deleted."""
    row = _file_row(request)
    store = _service(request).store
    user = store.live_batch_reading(row["id"])
    if user is not None:
        raise invalid(
            f"the file is the input of batch {user}, which is still running; cancel it first",
            param="file_id",
        )
    store.delete_file(row["id"])
    return _json({"id": row["id"], "object": "file", "deleted": True})


def _file_row(request: GatewayRequest) -> Row:
    file_id = request.path_params["file_id"]
    store = _service(request).store
    row = store.file(file_id, _visible_to(request)) if is_file_id(file_id) else None
    if row is None:
        raise _no_such("File", file_id)
    return row


# -- batches --------------------------------------------------------------------------------


async def create_batch(request: GatewayRequest) -> Response:
    """POST /v1/batches: `input_file_id`, `endpoint`, `completion_window` (24h),
    `metadata`, `output_expires_after` (`schemas.CreateBatchRequest`)."""
    service = _service(request)
    req = parse(CreateBatchRequest, await read_json(request), service.settings)
    store = service.store
    file_id = req.input_file_id
    source = store.file(file_id, _visible_to(request)) if is_file_id(file_id) else None
    if source is None:
        raise _no_such("File", file_id, param="input_file_id")
    if source["purpose"] != "batch":
        raise invalid(
            f"the file {file_id} has purpose {source['purpose']}; a batch reads a "
            "file uploaded with purpose batch",
            param="input_file_id",
        )
    row = store.add_batch(
        endpoint=req.endpoint,
        input_file_id=file_id,
        completion_window=req.completion_window,
        window_s=COMPLETION_WINDOW_S[req.completion_window],
        metadata=req.metadata,
        output_expires_s=req.output_expiry_s(service.settings.batch_file_ttl_s),
        owner=tenant_of(request.scope).name,
    )
    service.wake()
    return _json(batch_object(row))


async def retrieve_batch(request: GatewayRequest) -> Response:
    """GET /v1/batches/{batch_id}."""
    return _json(batch_object(_batch_row(request)))


async def list_batches(request: GatewayRequest) -> Response:
    """GET /v1/batches: newest first; `after`, `limit` (1-100, default 20)."""
    query = request.query_params
    page = _service(request).store.batches(
        after=query.get("after"),
        limit=_limit(query.get("limit"), 20, 100),
        owner=_visible_to(request),
    )
    return _json(list_object([batch_object(row) for row in page.rows], page.has_more))


async def cancel_batch(request: GatewayRequest) -> Response:
    """POST /v1/batches/{batch_id}/cancel: `cancelling` at once, `cancelled` once the lines
    in flight have stopped; the output so far stays available."""
    row = _batch_row(request)
    service = _service(request)
    if not service.store.request_cancel(row["id"]):
        fresh = service.store.existing_batch(row["id"])
        if fresh["status"] not in ("cancelling", "cancelled"):
            raise invalid(f"the batch is {fresh['status']} and can no longer be cancelled")
    service.wake()
    return _json(batch_object(service.store.existing_batch(row["id"])))


def _batch_row(request: GatewayRequest) -> Row:
    batch_id = request.path_params["batch_id"]
    store = _service(request).store
    row = store.batch(batch_id, _visible_to(request)) if is_batch_id(batch_id) else None
    if row is None:
        raise _no_such("Batch", batch_id)
    return row


def _no_such(kind: str, value: Any, param: str | None = None) -> APIError:
    return APIError(ErrorKind.NOT_FOUND, f"No such {kind} object: {brief(value)}", param=param)


def _limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    # isascii: str.isdigit() also accepts digits int() refuses, such as '²'.
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise invalid(
            f"`limit` must be an integer between 1 and {maximum}, got {brief(value)}", param="limit"
        )
    return int(value)


def _by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint per path that answers each method with its own handler (one route per
    path, as the rest of the route table has)."""

    async def endpoint(request: GatewayRequest) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return endpoint


ROUTES: list[Route] = [
    Route("/v1/files", _by_method(GET=list_files, POST=create_file), methods=["GET", "POST"]),
    Route(
        "/v1/files/{file_id}",
        _by_method(GET=retrieve_file, DELETE=delete_file),
        methods=["GET", "DELETE"],
    ),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", _by_method(GET=list_batches, POST=create_batch), methods=["GET", "POST"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
