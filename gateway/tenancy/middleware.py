"""The middleware after authentication: it makes the caller known to the rest of the request
(the access log's `key`, `current_tenant` for the embedding cache) and applies the caller's
rate limits, with OpenAI's `x-ratelimit-*` headers on every answer to a limited key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response
from gateway.http.request_context import note, notes_of
from gateway.tenancy.keys import current_tenant, identified
from gateway.tenancy.limits import RateLimiter


class TenantMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = identified(scope) if scope["type"] == "http" else None
        if tenant is None:  # a public path, or not HTTP
            await self.app(scope, receive, send)
            return
        if tenant.name:
            note(Request(scope), key=tenant.name)
        decision = self.limiter.admit(tenant)
        if not decision.allowed:
            note(Request(scope), rate_limited=decision.refused_by)
            # The body stays unread, as with a refused key: the connection is closed after it.
            await error_response(decision.error(tenant), scope, close=True)(scope, receive, send)
            return
        extra = [(name.encode(), value.encode()) for name, value in decision.headers.items()]

        async def send_with_limits(message: Message) -> None:
            if extra and message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        token = current_tenant.set(tenant)
        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            current_tenant.reset(token)
            # Counted after the answer: the tokens the request's usage reports.
            self.limiter.charge(tenant, int(notes_of(scope).get("tokens", 0)))
