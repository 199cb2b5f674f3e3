"""Ranking: documents scored for a query, each by its best chunk.

A document longer than the model's window is cut into consecutive chunks by the engine's
tokenizer; its score is its best chunk's, as Cohere does. Pair models (cross-encoders, LLM
rerankers) score (query, chunk) pairs; other models score by their own outputs, the query and
each chunk embedded with the model's query or document prompt if it has one: the cosine of
dense vectors, the sparse weights' dot product, ColBERT's MaxSim over token vectors, or a
weighted hybrid of the three (`gateway.serving.hybrid`; the request's `mode` and `weights`).
Every route that reranks or scores pairs (Cohere, Jina, TEI, vLLM) calls `rank`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from adapters.base import (
    EmbeddingBatch,
    Engine,
    InvalidInput,
    MultiVectorBatch,
    Prompt,
    SparseBatch,
    SplitLimits,
)
from gateway.config import Settings
from gateway.errors import invalid
from gateway.serving import costs, hybrid
from gateway.serving.encoding import refuse_non_finite_scores
from gateway.serving.guard import Guard, run_guarded
from gateway.serving.inputs import apply_template, prompt_template
from gateway.serving.outputs import token_vector_limit, token_vector_limited
from gateway.serving.registry import ServedModel


@dataclass(frozen=True)
class RankJob:
    """What to rank: `texts` (one per document) for `query` on `served`, with the request's
    chunk bounds; `activation=False` asks a pair model for its raw logits."""

    served: ServedModel
    query: str
    texts: list[str]
    max_tokens_per_doc: int | None = None
    max_chunks_per_doc: int | None = None
    activation: bool | None = None
    # How a model without a pair score ranks (`hybrid.MODES`; None: `hybrid.default_mode`)
    # and hybrid's [dense, sparse, colbert] weights (None: `hybrid.DEFAULT_WEIGHTS`).
    mode: str | None = None
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Ranking:
    """Each request document's score (input order), the tokens the engine read, and the
    seconds spent tokenizing (chunking included)."""

    scores: np.ndarray
    prompt_tokens: int
    chunks: int
    tokenization_s: float = 0.0


def split_limits(job: RankJob, settings: Settings, mode: str = "pair") -> SplitLimits:
    """The chunk and token bounds a split must stay within (`Engine.split` checks them once
    it has counted each document's tokens, before it builds a chunk); a mode that computes
    token vectors is also bounded by `--max-token-vectors`."""
    tokens = settings.max_request_tokens
    if "multivector" in hybrid.needs(mode):
        tokens = token_vector_limit(settings)
    return SplitLimits(
        max_chunks_per_text=job.max_chunks_per_doc,
        max_chunks=settings.max_rerank_chunks,
        max_total_tokens=tokens,
    )


def check_costs(job: RankJob, settings: Settings, window: int, model: str) -> None:
    """Before any tokenizing: the query is never cut, so it gets the per-input bound; the
    documents are chunked, not truncated, so they count in full toward the request's."""
    costs.check_chars(
        [len(job.query)],
        truncating=False,
        settings=settings,
        window=window,
        model=model,
        what="query",
    )
    costs.check_request_chars(
        len(job.query) + sum(len(t) for t in job.texts), settings, what="document"
    )


async def rank(job: RankJob, guard: Guard) -> Ranking:
    """Every document's score for the query, the best of its chunks', checked for cost
    before any tokenizing and run under admission twice: by documents to cut them, then by
    chunks, the engine work, to score them. Used by every route that reranks."""
    served, settings = job.served, guard.settings
    facts = served.engine.facts
    mode, weights = hybrid.resolve(facts, served.name, job.mode, job.weights)
    job = replace(job, mode=mode, weights=weights)
    check_costs(job, settings, facts.max_model_len, served.name)
    chunking = time.perf_counter()
    split: Callable[[], Awaitable[list[list[str]]]]
    split = partial(split_documents, job, split_limits(job, settings, mode))
    if "multivector" in hybrid.needs(mode):
        split = token_vector_limited(facts, settings, split)
    pieces = await run_guarded(guard, served, len(job.texts), split)
    split_s = time.perf_counter() - chunking
    score: Callable[[], Awaitable[Ranking]] = partial(score_chunks, job, pieces)
    if "multivector" in hybrid.needs(mode):
        score = token_vector_limited(facts, settings, score)
    ranking = await run_guarded(guard, served, sum(map(len, pieces)), score)
    refuse_non_finite_scores(ranking.scores)
    # The chunking is tokenizing too (x-tokenization-time).
    return replace(ranking, tokenization_s=ranking.tokenization_s + split_s)


async def split_documents(job: RankJob, limits: SplitLimits) -> list[list[str]]:
    """Each document's chunks, cut to fit the model's window with the query (pair models) or
    with the document prompt (embedding models)."""
    served = job.served
    if served.engine.facts.scores_pairs:
        return await served.engine.split(
            job.texts, query=job.query, max_tokens=job.max_tokens_per_doc, limits=limits
        )
    return await served.engine.split(
        job.texts, max_tokens=job.max_tokens_per_doc, wrap=_prompts(served)[1], limits=limits
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


async def score_chunks(job: RankJob, pieces: list[list[str]]) -> Ranking:
    """Score every document for the query: the best of its chunks' scores."""
    served = job.served
    engine = served.engine
    flat, owners = _flatten(pieces, job.max_chunks_per_doc)
    if engine.facts.scores_pairs:
        batch = await engine.score(job.query, flat, activation=job.activation)
        return _best_chunks(
            len(pieces), owners, batch.scores, batch.total_tokens, batch.tokenization_s
        )
    query_prompt, wrap = _prompts(served)
    query = apply_template(query_prompt, job.query) if query_prompt is not None else job.query
    prompts = [query, *(wrap(c) if wrap else c for c in flat)]
    mode = job.mode or hybrid.default_mode(engine.facts)
    try:
        scores, computed = await _mode_scores(engine, mode, job.weights, prompts)
    except InvalidInput as exc:
        if exc.index != 0:  # chunks fit by construction; input 0 is the query
            raise
        raise invalid(f"`query` does not fit the model: {exc.message}", param="query") from exc
    return _best_chunks(len(pieces), owners, scores, computed.total_tokens, computed.tokenization_s)


async def _mode_scores(
    engine: Engine, mode: str, weights: tuple[float, ...] | None, prompts: Sequence[Prompt]
) -> tuple[np.ndarray, EmbeddingBatch | SparseBatch | MultiVectorBatch]:
    """Each chunk's score for the query (`prompts[0]`) in `mode`, and the first batch
    computed (all read the same prompts: their tokens count once)."""
    found: dict[str, np.ndarray] = {}
    batches: list[EmbeddingBatch | SparseBatch | MultiVectorBatch] = []
    if mode in ("dense", "hybrid"):
        dense = await engine.embed(prompts)
        found["dense"] = cosine(dense.vectors[0], dense.vectors[1:])
        batches.append(dense)
    if mode in ("sparse", "hybrid"):
        sparse = await engine.embed_sparse(prompts)
        found["sparse"] = hybrid.sparse_scores(sparse.vectors[0], sparse.vectors[1:])
        batches.append(sparse)
    if mode in ("colbert", "hybrid"):
        tokens = await engine.embed_tokens(prompts)
        found["colbert"] = hybrid.maxsim_scores(tokens.matrices[0], tokens.matrices[1:])
        batches.append(tokens)
    if mode == "hybrid":
        scores = hybrid.hybrid_scores(
            found["dense"], found["sparse"], found["colbert"], weights or hybrid.DEFAULT_WEIGHTS
        )
    else:
        scores = found[mode]
    return scores, batches[0]


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
