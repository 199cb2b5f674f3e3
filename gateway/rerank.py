"""Rerank: the Cohere v1/v2 and Jina wire shapes, long-document chunking, and scoring.

One request shape covers the three dialects (they differ only in optional fields), and one
response shape satisfies every client: Cohere's SDKs read `results[].index/relevance_score`
and allow extra keys, the Jina clients read the same plus `usage`. Every optional field may be
an explicit `null` (LangChain sends `"max_tokens_per_doc": null`).

A document longer than the model's window is cut into consecutive chunks by the engine's
tokenizer; its score is its best chunk's, as Cohere does. Pair models (cross-encoders, LLM
rerankers) score (query, chunk) pairs; embedding models score by the cosine of the query's and
the chunk's vectors, each embedded with the model's query or document prompt if it has one.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated, Any, NotRequired

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from adapters.base import InvalidInput, SplitLimits
from gateway import costs
from gateway.admission import run_guarded
from gateway.encoding import refuse_non_finite_scores
from gateway.errors import brief, invalid
from gateway.inputs import apply_template, prompt_template
from gateway.registry import ServedModel
from gateway.schemas import (
    Limit,
    Model,
    PositiveInt,
    Says,
    Text,
    Wire,
    check_text,
    parse,
    shapes,
)
from gateway.state import GatewayRequest

# Paths served by the one rerank handler. `/v1/v2/rerank` is what the Cohere SDK calls when a
# user gives it an OpenAI-style base URL ending in /v1.
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank", "/v1/v2/rerank")
# Echoed documents (`return_documents`) may nest this deep: orjson writes at most 254 levels,
# and the answer wraps a document in three (body, `results`, result).
MAX_DOCUMENT_DEPTH = 64
# Cohere bills one search unit per query and up to this many documents (chunks included).
_DOCUMENTS_PER_SEARCH_UNIT = 100


@dataclass(frozen=True)
class Ranking:
    """Each request document's score (input order), the tokens the engine read, and the
    seconds spent tokenizing (chunking included)."""

    scores: np.ndarray
    prompt_tokens: int
    chunks: int
    tokenization_s: float = 0.0


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


class RerankRequest(Wire):
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


def parse_rerank_request(body: Any, settings: Any) -> RerankRequest:
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


def split_limits(req: RerankRequest, settings: Any) -> SplitLimits:
    """The chunk and token bounds a split must stay within (`Engine.split` checks them once
    it has counted each document's tokens, before it builds a chunk)."""
    return SplitLimits(
        max_chunks_per_text=req.max_chunks_per_doc,
        max_chunks=settings.max_rerank_chunks,
        max_total_tokens=settings.max_request_tokens,
    )


def check_costs(req: RerankRequest, settings: Any, window: int, model: str) -> None:
    """Before any tokenizing: the query is never cut, so it gets the per-input bound; the
    documents are chunked, not truncated, so they count in full toward the request's."""
    costs.check_chars(
        [len(req.query)],
        truncating=False,
        settings=settings,
        window=window,
        model=model,
        what="query",
    )
    costs.check_request_chars(
        len(req.query) + sum(len(t) for t in req.texts), settings, what="document"
    )


async def rank(request: GatewayRequest, served: ServedModel, req: RerankRequest) -> Ranking:
    """Every document's score for the query, the best of its chunks', checked for cost
    before any tokenizing and run under admission twice: by documents to cut them, then by
    chunks, the engine work, to score them. Used by every route that reranks."""
    settings = request.state["settings"]
    check_costs(req, settings, served.engine.facts.max_model_len, served.name)
    chunking = time.perf_counter()
    pieces = await run_guarded(
        request,
        served,
        len(req.texts),
        lambda: split_documents(served, req, split_limits(req, settings)),
    )
    split_s = time.perf_counter() - chunking
    ranking = await run_guarded(
        request, served, sum(map(len, pieces)), lambda: score_chunks(served, req, pieces)
    )
    refuse_non_finite_scores(ranking.scores)
    # The chunking is tokenizing too (x-tokenization-time).
    return replace(ranking, tokenization_s=ranking.tokenization_s + split_s)


async def split_documents(
    served: ServedModel, req: RerankRequest, limits: SplitLimits
) -> list[list[str]]:
    """Each document's chunks, cut to fit the model's window with the query (pair models) or
    with the document prompt (embedding models)."""
    if served.engine.facts.scores_pairs:
        return await served.engine.split(
            req.texts, query=req.query, max_tokens=req.max_tokens_per_doc, limits=limits
        )
    return await served.engine.split(
        req.texts, max_tokens=req.max_tokens_per_doc, wrap=_prompts(served)[1], limits=limits
    )


def _prompts(served: ServedModel) -> tuple[str | None, Callable[[str], str] | None]:
    # An embedding model with query/document prompts (e5, bge, ...) embeds each side with its
    # own, as a search would: chunks are cut so that they fit with the document prompt.
    query_prompt, document_prompt = (
        prompt_template(served.policy, name=None, input_type=side)
        for side in ("search_query", "search_document")
    )
    wrap = partial(apply_template, document_prompt) if document_prompt is not None else None
    return query_prompt, wrap


async def score_chunks(served: ServedModel, req: RerankRequest, pieces: list[list[str]]) -> Ranking:
    """Score every document for the query: the best of its chunks' scores."""
    engine = served.engine
    flat, owners = _flatten(pieces, req.max_chunks_per_doc)
    if engine.facts.scores_pairs:
        batch = await engine.score(req.query, flat, activation=req.use_activation)
        return _best_chunks(
            len(pieces), owners, batch.scores, batch.total_tokens, batch.tokenization_s
        )
    query_prompt, wrap = _prompts(served)
    query = apply_template(query_prompt, req.query) if query_prompt is not None else req.query
    try:
        embedded = await engine.embed([query, *(wrap(c) if wrap else c for c in flat)])
    except InvalidInput as exc:
        if exc.index != 0:  # chunks fit by construction; input 0 is the query
            raise
        raise invalid(f"`query` does not fit the model: {exc.message}", param="query") from exc
    scores = cosine(embedded.vectors[0], embedded.vectors[1:])
    return _best_chunks(len(pieces), owners, scores, embedded.total_tokens, embedded.tokenization_s)


def _flatten(pieces: list[list[str]], max_chunks: int | None) -> tuple[list[str], np.ndarray]:
    """All chunks in one list (at most `max_chunks` per document), and each one's document."""
    if max_chunks is not None:
        pieces = [chunks[:max_chunks] for chunks in pieces]
    owners = np.array([i for i, chunks in enumerate(pieces) for _ in chunks])
    return [chunk for chunks in pieces for chunk in chunks], owners


def _best_chunks(
    documents: int, owners: np.ndarray, chunk_scores: np.ndarray, tokens: int, tokenization_s: float
) -> Ranking:
    scores = np.full(documents, -np.inf)
    with np.errstate(invalid="ignore"):  # a NaN score stays NaN, refused by the route
        np.maximum.at(scores, owners, chunk_scores)
    return Ranking(
        scores=scores, prompt_tokens=tokens, chunks=len(owners), tokenization_s=tokenization_s
    )


def cosine(query: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector with each row, in float64."""
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(documents, dtype=np.float64)
    norms = np.linalg.norm(d, axis=1) * np.linalg.norm(q)
    similarity: np.ndarray = (d @ q) / np.where(norms == 0, 1.0, norms)
    return similarity


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
