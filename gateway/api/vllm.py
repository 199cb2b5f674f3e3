"""vLLM's own server routes: `POST /score` (and `/v1/score`), `POST /tokenize` with
`prompt`, `POST /detokenize`: shapes (those of vLLM's entrypoints, pooling/scoring/protocol.py
and serve/tokenize/protocol.py), handlers and answers. `model` is optional there as in vLLM
(the default model)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from starlette.responses import Response

from gateway.api.context import guarded, model_of, rank_texts
from gateway.api.wire import Answer, Limit, Model, RankModes, Says, Text, Wire, parse
from gateway.errors import invalid
from gateway.http.body import read_json
from gateway.http.responses import json_response
from gateway.serving import token_costs
from gateway.state import GatewayRequest, settings_of

TextOrTexts = Annotated[
    Text | Annotated[list[Text], Field(min_length=1), Limit("max_rerank_documents")],
    Says("`{name}` must be a string or a non-empty list of strings, got {value}"),
]


class _Scoring(RankModes):
    model: Model | None = None
    # False: a pair model's raw logits (vLLM's field).
    use_activation: bool | None = None

    def sides(self) -> tuple[Any, Any, str, str]:
        raise NotImplementedError

    def pairs(self) -> list[tuple[str, str]]:
        """vLLM's pairing: one first text with every second text, or lists of equal length
        pairwise (and, beyond vLLM, every first text with one second text)."""
        first, second, name_1, name_2 = self.sides()
        firsts = [first] if isinstance(first, str) else list(first)
        seconds = [second] if isinstance(second, str) else list(second)
        if len(firsts) == 1:
            return [(firsts[0], s) for s in seconds]
        if len(seconds) == 1:
            return [(f, seconds[0]) for f in firsts]
        if len(firsts) != len(seconds):
            raise invalid(
                f"`{name_1}` and `{name_2}` must have the same length, or "
                f"`{name_1}` one entry; got {len(firsts)} and {len(seconds)}",
                param=name_1,
            )
        return list(zip(firsts, seconds))


class ScoreTextRequest(_Scoring):
    """`POST /score` with `text_1` and `text_2`."""

    text_1: TextOrTexts
    text_2: TextOrTexts

    def sides(self) -> tuple[Any, Any, str, str]:
        return self.text_1, self.text_2, "text_1", "text_2"


class ScoreQueriesRequest(_Scoring):
    """`POST /score` with `queries` and `documents`."""

    queries: TextOrTexts
    documents: TextOrTexts

    def sides(self) -> tuple[Any, Any, str, str]:
        return self.queries, self.documents, "queries", "documents"


def score_shape(body: Any) -> type[_Scoring]:
    return ScoreQueriesRequest if isinstance(body, dict) and "queries" in body else ScoreTextRequest


class VllmTokenizeRequest(Wire):
    """`POST /tokenize` with `prompt` (vLLM's completion form; the chat form is refused)."""

    model: Model | None = None
    prompt: Annotated[
        Text,
        Says("`prompt` is required: a string (the chat form with `messages` is not supported)"),
    ]
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(Wire):
    """`POST /detokenize`."""

    model: Model | None = None
    tokens: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class Score(Answer):
    index: int
    object: Literal["score"]
    score: float


class ScoreUsage(Answer):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int


class ScoreResponse(Answer):
    """`POST /score`: one score per pair, in pair order."""

    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[Score]
    usage: ScoreUsage


class VllmTokenizeResponse(Answer):
    """`POST /tokenize` with `prompt`; `token_strs` with `return_token_strs`."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None


class DetokenizeResponse(Answer):
    prompt: str


def score_answer(model: str, scores: Iterable[float], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": f"score-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens,
            "completion_tokens": 0,
        },
    }


async def score(request: GatewayRequest) -> Response:
    """POST /score, /v1/score: vLLM's pair scores (`text_1`/`text_2` or
    `queries`/`documents`), each pair scored as the rerank routes score it."""
    body = await read_json(request)
    settings = settings_of(request)
    req = parse(score_shape(body), body, settings)
    served = model_of(request, req.model, scoring=True)
    pairs = req.pairs()
    token_costs.check_pairs(pairs, settings, req.sides()[3])
    scores = np.zeros(len(pairs))
    tokens = 0
    for query in dict.fromkeys(q for q, _ in pairs):  # one rerank per distinct first text
        where = [i for i, (q, _) in enumerate(pairs) if q == query]
        ranking = await rank_texts(
            request,
            served,
            query,
            [pairs[i][1] for i in where],
            req.use_activation,
            req.mode,
            req.rank_weights,
        )
        scores[where] = ranking.scores
        tokens += ranking.prompt_tokens
    return json_response(score_answer(req.model or served.name, scores, tokens))


async def tokenize(request: GatewayRequest, body: Any) -> Response:
    """POST /tokenize with `prompt` (called by the tokenize route once the body says vLLM)."""
    settings = settings_of(request)
    req = parse(VllmTokenizeRequest, body, settings)
    served = model_of(request, req.model)
    token_costs.check_texts([req.prompt], served, settings, "prompt")
    tokens = (
        await guarded(
            request,
            served,
            1,
            lambda: served.engine.tokenize([req.prompt], add_special_tokens=req.add_special_tokens),
        )
    )[0]
    token_costs.check_returned(len(tokens.ids), settings, "prompt")
    answer = {
        "count": len(tokens.ids),
        "max_model_len": served.engine.facts.max_model_len,
        "tokens": tokens.ids,
        "token_strs": tokens.strings if req.return_token_strs else None,
    }
    return await token_costs.built(len(tokens.ids), lambda: json_response(answer))


async def detokenize(request: GatewayRequest) -> Response:
    """POST /detokenize: vLLM's `{"tokens"}` to `{"prompt"}`."""
    settings = settings_of(request)
    req = parse(DetokenizeRequest, await read_json(request), settings)
    served = model_of(request, req.model)
    token_costs.check_ids([req.tokens], settings, "tokens")
    texts = await guarded(request, served, 1, lambda: served.engine.detokenize([req.tokens]))
    return await token_costs.built(len(req.tokens), lambda: json_response({"prompt": texts[0]}))
