"""The OpenAI Batch API for /v1/embeddings (and /v1/rerank): Files and Batches endpoints, a
SQLite-backed store (PostgreSQL for a fleet: pg_store.py), and a background runner that
executes each line through the gateway's own route at a lower priority than interactive
requests.

The app mounts `ROUTES`, gives POSTs to `UPLOAD_PATHS` the larger body limit
`upload_limits(settings)`, keeps a `BatchService` in the app state (`state["batches"]`) and runs
`service.run(app)` in its lifespan; gateway/api/openapi.py merges `openapi_paths(...)`, with the
batch create body from the declaration `CreateBatchRequest`.
"""

from __future__ import annotations

from gateway.batches.openapi import openapi_paths
from gateway.batches.routes import MULTIPART_OVERHEAD_BYTES, ROUTES, UPLOAD_PATHS
from gateway.batches.runner import BatchService
from gateway.batches.schemas import CreateBatchRequest
from gateway.config import Settings

__all__ = [
    "ROUTES",
    "UPLOAD_PATHS",
    "BatchService",
    "CreateBatchRequest",
    "openapi_paths",
    "upload_limits",
]


def upload_limits(settings: Settings) -> dict[str, int]:
    """Body limits for POSTs to the upload paths: a batch file plus its multipart envelope."""
    return dict.fromkeys(UPLOAD_PATHS, settings.batch_max_file_bytes + MULTIPART_OVERHEAD_BYTES)
