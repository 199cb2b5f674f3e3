"""Which API dialect a request speaks, decided once from its routed path and kept in its scope.

The dialect decides what the answer looks like beyond the route's own body: Cohere's
`meta.api_version` (2 on the `/v2/` routes, including `/v1/v2/rerank`, which the Cohere SDK
calls when given a base URL ending in /v1) and the top-level `detail` string that error
bodies carry on rerank paths, where the Jina rerank clients read it instead of the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from starlette.types import Scope

_SCOPE_KEY = "gateway.dialect"


class API(Enum):
    OPENAI = "openai"
    COHERE_EMBED = "cohere-embed"
    RERANK = "rerank"  # Cohere v1/v2 and Jina share one shape


@dataclass(frozen=True)
class Dialect:
    api: API
    # Cohere's API version: 2 on the /v2/ routes, 1 elsewhere.
    version: int = 1

    @property
    def error_detail(self) -> bool:
        """Error bodies also carry a top-level `detail` string (Jina rerank clients)."""
        return self.api is API.RERANK


def dialect_of(scope: Scope) -> Dialect:
    """The request's dialect: decided from `scope["path"]` (the path the router dispatches on;
    request.url is rebuilt from the Host header) the first time it is asked, then kept."""
    dialect = scope.get(_SCOPE_KEY)
    if dialect is None:
        dialect = scope[_SCOPE_KEY] = _from_path(scope.get("path", ""))
    return dialect


def _from_path(path: str) -> Dialect:
    trimmed = path.rstrip("/")
    version = 2 if "/v2/" in trimmed + "/" else 1
    if trimmed.endswith("/rerank"):
        return Dialect(API.RERANK, version)
    if trimmed.endswith("/embed"):
        return Dialect(API.COHERE_EMBED, version)
    return Dialect(API.OPENAI)
