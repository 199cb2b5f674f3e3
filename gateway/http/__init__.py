"""ASGI middleware and transport, below every route: request ids, timings and logs
(request_context, logs), the drain gate (drain), authentication (security), body limits and
JSON decoding (body), the bounded HTTP protocol (connections), the dialect a request speaks
(dialects), JSON answers (responses) and the Swagger UI (docs)."""
