"""API-key authentication for every route, decided on the ASGI path.

Deny by default: when keys are configured, every path needs `Authorization: Bearer <key>`
except a short public allowlist (`/health`, `/ready`, and `/metrics` if configured). The
decision reads `scope["path"]`, the path the router dispatches on, never a URL rebuilt from
the Host header (vLLM GHSA-94f4-hr76-p5j6), and the allowlist is matched exactly, so
`/health/../v1/embeddings`, `//v1/embeddings` or `/v1%2Fembeddings` are not public.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import APIError, ErrorKind, error_response
from gateway.tenancy.keys import ANONYMOUS, KeyRing, set_tenant

PUBLIC_PATHS = frozenset({"/health", "/ready"})


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
    carries a configured key or asks for a public path. The key's tenant goes into the scope
    (`gateway.tenancy.identified`); without keys every request is the anonymous tenant's."""

    def __init__(self, app: ASGIApp, keys: KeyRing, public_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = keys
        self.public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        if not self.keys:
            set_tenant(scope, ANONYMOUS)
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        tenant = self.keys.identify(token) if token is not None else None
        if tenant is not None:
            set_tenant(scope, tenant)
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
