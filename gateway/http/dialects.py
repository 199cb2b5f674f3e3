"""Which API dialect a request speaks, decided once from its routed path and kept in its scope.

The dialect decides what the answer looks like beyond the route's own body: Cohere's
`meta.api_version` (2 on the `/v2/` routes, including `/v1/v2/rerank`, which the Cohere SDK
calls when given a base URL ending in /v1), the top-level `detail` string that error
bodies carry on rerank paths, where the Jina rerank clients read it instead of the envelope,
Hugging Face TEI's own error body `{"error", "error_type"}` on TEI's routes, and Ollama's
`{"error"}` on its `/api/` routes.

Three paths are shared by two APIs: `/embed` (TEI sends `inputs`, clients of the plain texts
API `texts`), `/rerank` (TEI sends `texts`, Cohere and Jina `documents`) and `/tokenize` (TEI sends
`inputs`, vLLM `prompt`). Until the body is read (auth, body limit) such a path speaks its
first API; once it is read, `settle(scope, body)` decides from the body, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.types import Scope

_SCOPE_KEY = "gateway.dialect"
_SETTLED_KEY = "gateway.dialect.settled"


class API(Enum):
    OPENAI = "openai"
    COHERE_EMBED = "cohere-embed"
    RERANK = "rerank"  # Cohere v1/v2 and Jina share one shape
    TEI = "tei"  # Hugging Face text-embeddings-inference
    VLLM = "vllm"  # vLLM's own routes: /score, /pooling, /classify, /tokenize, /detokenize
    TEXTS = "texts"  # POST /embed {"texts"} -> {"embeddings"}
    OLLAMA = "ollama"  # Ollama's /api/ routes


@dataclass(frozen=True)
class Dialect:
    api: API
    # Cohere's API version: 2 on the /v2/ routes, 1 elsewhere.
    version: int = 1

    @property
    def error_detail(self) -> bool:
        """Error bodies also carry a top-level `detail` string (Jina rerank clients, and the
        texts API's FastAPI-style clients)."""
        return self.api in (API.RERANK, API.TEXTS)


# Paths of one dialect only (beyond the suffix rules of `_from_path`).
_TEI_PATHS = frozenset(
    {
        "",
        "/embed",
        "/embed_sparse",
        "/embed_all",
        "/predict",
        "/similarity",
        "/tokenize",
        "/decode",
        "/info",
    }
)
_VLLM_PATHS = frozenset({"/score", "/v1/score", "/detokenize", "/pooling", "/classify"})
# A shared path: (body keys that select the other API, keys that keep the path's own, and
# that other API).
_BY_BODY = {
    "/embed": (("texts",), (), API.TEXTS),
    "/rerank": (("texts",), ("documents",), API.TEI),
    "/tokenize": (("prompt", "messages"), (), API.VLLM),
}


def dialect_of(scope: Scope) -> Dialect:
    """The request's dialect: decided from `scope["path"]` (the path the router dispatches on;
    request.url is rebuilt from the Host header) the first time it is asked, then kept."""
    dialect = scope.get(_SCOPE_KEY)
    if dialect is None:
        dialect = scope[_SCOPE_KEY] = _from_path(scope.get("path", ""))
    return dialect


def settle(scope: Scope, body: Any) -> Dialect:
    """The dialect of a request on a shared path, decided from its decoded body (once; on
    other paths, the path's dialect): `/embed` with `texts` is the texts API's, `/rerank` with
    `texts` and no `documents` TEI's, `/tokenize` with `prompt` vLLM's."""
    if scope.get(_SETTLED_KEY):
        return dialect_of(scope)
    scope[_SETTLED_KEY] = True
    rule = _BY_BODY.get(scope.get("path", "").rstrip("/"))
    if rule is not None and isinstance(body, dict):
        selecting, keeping, api = rule
        if any(body.get(k) is not None for k in selecting) and all(
            body.get(k) is None for k in keeping
        ):
            scope[_SCOPE_KEY] = Dialect(api)
    return dialect_of(scope)


def _from_path(path: str) -> Dialect:
    trimmed = path.rstrip("/")
    if trimmed.startswith("/api/"):  # before the suffix rules: /api/embed is not Cohere's
        return Dialect(API.OLLAMA)
    if trimmed in _TEI_PATHS:
        return Dialect(API.TEI)
    if trimmed in _VLLM_PATHS:
        return Dialect(API.VLLM)
    version = 2 if "/v2/" in trimmed + "/" else 1
    if trimmed.endswith("/rerank"):
        return Dialect(API.RERANK, version)
    if trimmed.endswith("/embed"):
        return Dialect(API.COHERE_EMBED, version)
    return Dialect(API.OPENAI)
