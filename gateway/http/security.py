"""API-key authentication for every route, decided on the ASGI path.

Deny by default: when keys are configured, every path needs `Authorization: Bearer <key>`
except a short public allowlist (`/health`, `/ready`, and `/metrics` if configured). The
decision reads `scope["path"]`, the path the router dispatches on, never a URL rebuilt from
the Host header (vLLM GHSA-94f4-hr76-p5j6), and the allowlist is matched exactly, so
`/health/../v1/embeddings`, `//v1/embeddings` or `/v1%2Fembeddings` are not public.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response

PUBLIC_PATHS = frozenset({"/health", "/ready"})


class KeyChecker:
    """Constant-time check of a presented key against every configured key."""

    def __init__(self, keys: Iterable[str]) -> None:
        # Comparing fixed-length digests hides the keys' lengths as well as their content.
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: bytes) -> bool:
        digest = hashlib.sha256(presented).digest()
        found = False
        for known in self._digests:  # no early exit: the time does not say which key matched
            found |= hmac.compare_digest(digest, known)
        return found


def bearer_token(scope: Scope) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


class AuthMiddleware:
    """401 in the OpenAI envelope, with `WWW-Authenticate: Bearer`, unless the request
    carries a configured key or asks for a public path."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], public_paths: Iterable[str]) -> None:
        self.app = app
        self.checker = KeyChecker(keys)
        self.public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or not self.checker or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and self.checker.accepts(token):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a websocket (none are served): refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (
            "missing API key: send it as `Authorization: Bearer <key>`"
            if token is None
            else "incorrect API key provided"
        )
        error = APIError(ErrorKind.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
        await error_response(error, scope, close=True)(scope, receive, send)


def exposure_warning(host: str, keys: Iterable[str]) -> str | None:
    """The startup warning for serving beyond this machine without any API key, or None."""
    if any(keys):
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"serving on {host} without API keys: every route is open to whoever can reach "
        "this address; set --api-key-file (or --api-key), or listen on 127.0.0.1"
    )
