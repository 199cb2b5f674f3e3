"""vLLM's own server routes: `POST /score` (and `/v1/score`), `POST /pooling`, `POST /classify`,
`POST /tokenize` with `prompt`, `POST /detokenize`: shapes (those of vLLM's entrypoints,
pooling/scoring, pooling/pooling, pooling/classify and serve/tokenize protocol.py), handlers and
answers. `model` is optional there as in vLLM (the default model). /pooling and /classify take
text `input` (not token ids, nor the chat form with `messages`).

`/pooling`'s `task`: `embed` (the dense vector), `token_embed` (one vector per token),
`classify` (label scores). vLLM's `token_classify` on bge-m3 answers one sparse weight per
token position (`[[w], ...]`); the engine here computes sparse weights by token id (max over a
token's positions, as FlagEmbedding's lexical weights are), which would read as that shape
with different meaning, so `token_classify` is refused with a 400 that names /embed_sparse and
`return_sparse`, where the weights by token id are served."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from starlette.responses import Response

from gateway.api.context import guard_of, guarded, model_of, rank_texts
from gateway.api.wire import (
    Answer,
    Limit,
    Model,
    RankModes,
    Says,
    Text,
    TokenCap,
    Wire,
    one_of,
    parse,
)
from gateway.errors import invalid
from gateway.http.body import read_json
from gateway.http.responses import json_response
from gateway.serving import outputs, token_costs
from gateway.serving.embedding import EmbedJob
from gateway.serving.inputs import Truncation
from gateway.serving.registry import ServedModel
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


POOLING_TASKS = ("embed", "token_embed", "token_classify", "classify")
# The engine output each task reads.
_TASK_OUTPUT = {"embed": "dense", "token_embed": "multivector", "classify": "classify"}
InputTexts = Annotated[
    Text | Annotated[list[Text], Field(min_length=1), Limit("max_inputs")],
    Says("`{name}` must be a string or a non-empty list of strings, got {value}"),
]


class _PoolingInputs(Wire):
    model: Model | None = None
    input: InputTexts
    truncate_prompt_tokens: TokenCap | None = None
    # False: the raw logits (classify), the unnormalised vector (embed).
    use_activation: bool | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    @property
    def truncation(self) -> Truncation:
        return Truncation.of(None, self.truncate_prompt_tokens)


class PoolingRequest(_PoolingInputs):
    """`POST /pooling`: the model's output for `task` (absent: what the model computes first of
    embed, classify, token_embed), as floats or little-endian float32 base64 (row-major for
    token vectors)."""

    task: one_of(POOLING_TASKS) | None = None  # type: ignore[valid-type]  # a runtime Literal
    encoding_format: one_of(("float", "base64")) = "float"  # type: ignore[valid-type]


class ClassifyRequest(_PoolingInputs):
    """`POST /classify`: each text's label probabilities (logits without activation)."""


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


class PoolingData(Answer):
    index: int
    object: Literal["pooling"]
    # A vector, token vectors, label scores, or their float32 bytes in base64.
    data: list[list[float]] | list[float] | str


class PoolingResponse(Answer):
    """`POST /pooling`: one item per input, in input order."""

    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[PoolingData]
    usage: ScoreUsage


class ClassificationData(Answer):
    index: int
    # The label with the highest score.
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(Answer):
    """`POST /classify`: one item per input, in input order."""

    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[ClassificationData]
    usage: ScoreUsage


class VllmTokenizeResponse(Answer):
    """`POST /tokenize` with `prompt`; `token_strs` with `return_token_strs`."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None


class DetokenizeResponse(Answer):
    prompt: str


def _usage(prompt_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}


def pooling_answer(model: str, items: Sequence[Any], prompt_tokens: int) -> dict[str, Any]:
    """vLLM's pooling list: `items[i]` is input i's data (floats, rows, or base64)."""
    return {
        "id": f"pool-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "pooling", "data": item} for i, item in enumerate(items)],
        "usage": _usage(prompt_tokens),
    }


def classification_answer(
    model: str, scores: np.ndarray, labels: Sequence[str], prompt_tokens: int
) -> dict[str, Any]:
    """vLLM's classification list: each input's scores and its best label."""
    return {
        "id": f"classify-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [
            {
                "index": i,
                "label": labels[int(np.argmax(row))] if len(labels) else None,
                "probs": [float(p) for p in row],
                "num_classes": len(row),
            }
            for i, row in enumerate(scores)
        ],
        "usage": _usage(prompt_tokens),
    }


def default_task(outputs: Sequence[str]) -> str:
    """The task of a /pooling request that names none: the model's first of embed, classify,
    token_embed (vLLM: the model's own pooling task)."""
    for task in ("embed", "classify", "token_embed"):
        if _TASK_OUTPUT[task] in outputs:
            return task
    return "embed"


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


async def pooling(request: GatewayRequest) -> Response:
    """POST /pooling: the output of `task` for each input."""
    req = parse(PoolingRequest, await read_json(request), settings_of(request))
    served = model_of(request, req.model)
    task = req.task or default_task(served.engine.facts.outputs)
    if task == "token_classify":
        raise invalid(
            "`task` token_classify (vLLM: one weight per token position) is not served; "
            "sparse weights by token id are: POST /embed_sparse, or /v1/embeddings with "
            '"return_sparse": true',
            param="task",
        )
    guard = guard_of(request)
    name = req.model or served.name
    if task == "classify":
        batch = await outputs.classify(_classify_job(served, req), guard)
        items: list[Any] = [np.asarray(row, dtype="<f4") for row in batch.scores]
        tokens = batch.total_tokens
    else:
        activation = req.use_activation is not False
        job = EmbedJob(served, name, req.texts, None, req.truncation, normalize=activation)
        computed = await outputs.compute(job, guard, (_TASK_OUTPUT[task],))
        if computed.dense is not None:
            items = list(np.ascontiguousarray(computed.dense.vectors, dtype="<f4"))
        else:
            assert computed.tokens is not None
            items = [np.ascontiguousarray(m, dtype="<f4") for m in computed.tokens.matrices]
        tokens = computed.total_tokens
    if req.encoding_format == "base64":
        items = [base64.b64encode(np.ascontiguousarray(i).tobytes()).decode() for i in items]
    # Token vectors make an answer of about one row per token read: a large one is built off
    # the event loop.
    return await token_costs.built(
        tokens, lambda: json_response(pooling_answer(name, items, tokens))
    )


async def classify(request: GatewayRequest) -> Response:
    """POST /classify: each text's label scores, with its best label."""
    req = parse(ClassifyRequest, await read_json(request), settings_of(request))
    served = model_of(request, req.model)
    batch = await outputs.classify(_classify_job(served, req), guard_of(request))
    labels = served.engine.facts.labels
    return json_response(
        classification_answer(req.model or served.name, batch.scores, labels, batch.total_tokens)
    )


def _classify_job(served: ServedModel, req: _PoolingInputs) -> outputs.ClassifyJob:
    return outputs.ClassifyJob(
        served, list(req.texts), req.truncation, activation=req.use_activation is not False
    )


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
