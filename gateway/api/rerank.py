"""Rerank (`POST /rerank`, `/v1/rerank`, `/v2/rerank`): the Cohere v1/v2 and Jina wire shape,
its handler and its answer; the ranking itself is `gateway.serving.ranking`.

One request shape covers the three dialects (they differ only in optional fields), and one
response shape satisfies every client: Cohere's SDKs read `results[].index/relevance_score`
and allow extra keys, the Jina clients read the same plus `usage`. Every optional field may be
an explicit `null` (LangChain sends `"max_tokens_per_doc": null`). TEI's rerank body (`texts`)
on `/rerank` is answered by `gateway.api.tei`.
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import ErrorDetails
from starlette.responses import Response
from typing_extensions import TypedDict

from gateway.api import tei
from gateway.api.context import guard_of
from gateway.api.wire import (
    Answer,
    Limit,
    Model,
    PositiveInt,
    RankModes,
    Says,
    Text,
    check_text,
    parse,
    shapes,
)
from gateway.config import Settings
from gateway.errors import brief, invalid
from gateway.http.body import read_json
from gateway.http.dialects import API, dialect_of, settle
from gateway.http.responses import json_response
from gateway.serving.guard import Guard
from gateway.serving.ranking import Ranking, RankJob, rank
from gateway.state import GatewayRequest

# Paths served by the one rerank handler. `/v1/v2/rerank` is what the Cohere SDK calls when a
# user gives it an OpenAI-style base URL ending in /v1.
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank", "/v1/v2/rerank")
# Echoed documents (`return_documents`) may nest this deep: orjson writes at most 254 levels,
# and the answer wraps a document in three (body, `results`, result).
MAX_DOCUMENT_DEPTH = 64
# Cohere bills one search unit per query and up to this many documents (chunks included).
_DOCUMENTS_PER_SEARCH_UNIT = 100


def _document_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, dict) else None


class RerankDocument(TypedDict):
    """A document given as an object: ranked by `text`, or by the `rank_fields` it has."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    text: NotRequired[Text]


def _documents_wording(error: ErrorDetails) -> str:
    loc, value = error["loc"], error["input"]
    if len(loc) == 1:
        return (
            "`documents` is required and must be a non-empty list of strings or objects "
            "with a `text` field"
        )
    if len(loc) == 2:
        return f"`documents[{loc[1]}]` must be a string or an object, got {type(value).__name__}"
    return f"`documents[{loc[1]}].text` must be a string"


class RerankRequest(RankModes):
    """A rerank body (Cohere v1/v2, Jina); `texts[i]` is what gets scored for `documents[i]`."""

    model: Model
    query: Annotated[
        str,
        Field(pattern=r"^[^\x00]*[^\x00\s][^\x00]*$"),
        Says("`query` is required and must be a non-empty string"),
    ]
    documents: Annotated[
        # shapes() builds the tagged union at runtime: to mypy a call, not a type.
        list[shapes(_document_shape, a_string=Text, an_object=RerankDocument)],  # type: ignore[valid-type]
        Field(min_length=1),
        Limit("max_rerank_documents"),
        Says(_documents_wording),
    ]
    top_n: PositiveInt | None = None
    return_documents: bool = True
    rank_fields: (
        Annotated[
            list[str],
            Field(min_length=1),
            Says("`rank_fields` must be a non-empty list of field names"),
        ]
        | None
    ) = None
    max_tokens_per_doc: PositiveInt | None = None
    max_chunks_per_doc: PositiveInt | None = None
    use_activation: bool | None = None
    _texts: list[str] = PrivateAttr()

    @model_validator(mode="after")
    def _rank_texts(self) -> RerankRequest:
        # Which fields are ranked depends on `rank_fields`, so this is checked after both.
        self._texts = [_document_text(i, d, self.rank_fields) for i, d in enumerate(self.documents)]
        if self.return_documents:
            for i, document in enumerate(self.documents):
                _check_depth(i, document)
        return self

    @property
    def texts(self) -> list[str]:
        return self._texts


class RerankResult(Answer):
    index: int
    relevance_score: float
    # With `return_documents`: the document as sent, a string made `{"text": ...}`.
    document: dict[str, Any] | None = None


class RerankApiVersion(Answer):
    version: str
    is_experimental: bool


class SearchUnits(Answer):
    search_units: int


class RerankMeta(Answer):
    api_version: RerankApiVersion
    billed_units: SearchUnits


class RerankUsage(Answer):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Answer):
    """Results by descending score; `index` points into the request's documents. Cohere's
    SDKs read `results` and `meta`, the Jina clients `results` and `usage`."""

    id: str
    model: str
    results: list[RerankResult]
    meta: RerankMeta
    usage: RerankUsage


def parse_rerank_request(body: Any, settings: Settings) -> RerankRequest:
    return parse(RerankRequest, body, settings)


def _document_text(index: int, document: Any, rank_fields: list[str] | None) -> str:
    if isinstance(document, str):
        return document
    fields = rank_fields or ["text"]
    missing = [f for f in fields if f not in document]
    if missing:
        raise invalid(
            f"`documents[{index}]` has no field {brief(missing[0])}"
            + ("" if rank_fields else "; name the fields to rank by in `rank_fields`"),
            param="documents",
        )
    if rank_fields is None:
        text: str = document["text"]
        return text
    for f in fields:  # a value is written out with str(), which recursion limits too
        _check_depth(index, document[f])
    # Several fields are ranked as "name: value" lines in the order given, as Cohere does.
    text = "\n".join(f"{f}: {_field_text(document[f])}" for f in fields)
    check_text(text, f"documents[{index}]", param="documents")
    return text


def _check_depth(index: int, document: Any) -> None:
    """A document to be echoed nests at most MAX_DOCUMENT_DEPTH levels (counted without
    recursion: JSON parsing allows 1024)."""
    level: list[Any] = [document]
    for depth in range(1, MAX_DOCUMENT_DEPTH + 2):
        level = [
            v
            for node in level
            if isinstance(node, (dict, list))
            for v in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return
    raise invalid(
        f"`documents[{index}]` nests more than {MAX_DOCUMENT_DEPTH} levels deep, too "
        f'deep to return; send it flatter, or "return_documents": false',
        param="documents",
    )


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


async def rerank(request: GatewayRequest) -> Response:
    """POST /v1/rerank, /v2/rerank, /rerank: Cohere v1/v2 and Jina rerank, one handler;
    TEI's rerank (`texts`, no `documents`) on /rerank."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.TEI:
        return await tei.rerank(request, body)
    version = dialect_of(request.scope).version
    return json_response(await answer_rerank(body, guard_of(request), version))


async def answer_rerank(body: Any, guard: Guard, api_version: int = 1) -> dict[str, Any]:
    """The answer to a Cohere or Jina rerank body (a route's or a batch line's)."""
    req = parse_rerank_request(body, guard.settings)
    served = guard.registry.resolve(req.model)
    guard.note(model=served.name, documents=len(req.texts))
    ranking = await rank(
        RankJob(
            served,
            req.query,
            req.texts,
            max_tokens_per_doc=req.max_tokens_per_doc,
            max_chunks_per_doc=req.max_chunks_per_doc,
            activation=req.use_activation,
            mode=req.mode,
            weights=req.rank_weights,
        ),
        guard,
    )
    guard.timing.tokenization_s = ranking.tokenization_s
    guard.note(tokens=ranking.prompt_tokens)
    return rerank_response(req, ranking, api_version)


def rerank_response(req: RerankRequest, ranking: Ranking, api_version: int) -> dict[str, Any]:
    """Results sorted by descending score, `index` pointing into the request's documents."""
    order = sorted(range(len(ranking.scores)), key=lambda i: -ranking.scores[i])
    if req.top_n is not None:
        order = order[: req.top_n]
    results = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": float(ranking.scores[i])}
        if req.return_documents:
            document = req.documents[i]
            result["document"] = document if isinstance(document, dict) else {"text": document}
        results.append(result)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": req.model,
        "results": results,
        "meta": {
            "api_version": {"version": str(api_version), "is_experimental": False},
            "billed_units": {"search_units": search_units(ranking.chunks)},
        },
        "usage": {"prompt_tokens": ranking.prompt_tokens, "total_tokens": ranking.prompt_tokens},
    }


def search_units(chunks: int) -> int:
    return max(1, math.ceil(chunks / _DOCUMENTS_PER_SEARCH_UNIT))
