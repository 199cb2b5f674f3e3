"""JSON answers: the one way routes write a body, and the header that says which inputs
were truncated."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.responses import Response


class Truncating(Protocol):
    """A result that says which inputs were truncated (every engine batch does)."""

    @property
    def truncated(self) -> tuple[int, ...]: ...


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def truncation_header(batch: Truncating) -> dict[str, str]:
    """Truncation is never silent: the indices of truncated inputs, when there are any."""
    if not batch.truncated:
        return {}
    return {"x-truncated-inputs": ",".join(map(str, batch.truncated))}
