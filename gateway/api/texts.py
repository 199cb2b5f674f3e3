"""The plain texts API: `POST /embed` with `{"texts": [...]}`, answered with
`{"embeddings": [[...], ...]}`. It has no `model` field of its own; the default model answers
(`model` may name another). TEI's `/embed` body (`inputs`) shares the path
(`gateway.http.dialects`); errors carry the top-level `detail` that FastAPI-style clients
read."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from starlette.responses import Response

from gateway.api.context import guard_of, model_of
from gateway.api.wire import Answer, Limit, Model, Says, Text, Wire, parse
from gateway.http.responses import json_response, truncation_header
from gateway.serving import embedding
from gateway.serving.encoding import refuse_non_finite
from gateway.state import GatewayRequest, settings_of


class TextsEmbedRequest(Wire):
    """`POST /embed` with `texts`."""

    model: Model | None = None
    texts: Annotated[
        list[Text],
        Field(min_length=1),
        Limit("max_inputs"),
        Says("`texts` is required: a non-empty list of strings"),
    ]


class TextsEmbedResponse(Answer):
    """One float vector per text, in order."""

    embeddings: list[list[float]]


async def embed(request: GatewayRequest, body: Any) -> Response:
    """POST /embed with `texts` (called by the /embed route once the body says so)."""
    req = parse(TextsEmbedRequest, body, settings_of(request))
    served = model_of(request, req.model)
    job = embedding.EmbedJob(served, req.model or served.name, req.texts)
    batch = await embedding.embed(job, guard_of(request))
    refuse_non_finite(batch.vectors)
    return json_response({"embeddings": list(batch.vectors)}, headers=truncation_header(batch))
