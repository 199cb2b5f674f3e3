"""Interactive API docs at `/docs`: Swagger UI rendering `/openapi.json`, its files served from
the `swagger-ui-bundle-v2` package (no CDN: the page works offline).

The page, its files and `/openapi.json` are public (as TEI's and vLLM's docs are): a browser
cannot send a bearer key when it opens a page. Every call the page makes to the API needs the
key, given once in the page's Authorize dialog (the document declares the bearer scheme when
keys are configured)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embedding-gateway API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
                             deepLinking: true, persistAuthorization: false});
</script></body></html>
"""
# The only files served: what the page loads.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
DOCS_PATHS = frozenset({"/docs", *(f"/docs/{name}" for name in ASSETS)})


def _folder() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


async def page(request: Request) -> Response:
    """GET /docs: Swagger UI over /openapi.json."""
    return HTMLResponse(_PAGE)


def _asset(name: str) -> Route:
    async def serve(request: Request) -> Response:
        return FileResponse(_folder() / name, media_type=ASSETS[name])

    return Route(f"/docs/{name}", serve, methods=["GET"])


DOCS_ROUTES: list[Route] = [
    Route("/docs", page, methods=["GET"]),
    *(_asset(name) for name in ASSETS),
]
