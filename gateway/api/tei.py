"""Hugging Face text-embeddings-inference (TEI): the request shapes, handlers and bare answers
of its routes (`POST /embed` with `inputs`, `/embed_sparse`, `/embed_all`, `/predict`,
`/rerank` with `texts`, `/similarity`, `/tokenize` with `inputs`, `/decode`, `GET /info` and
`POST /`), as its clients read them
(`huggingface_hub.InferenceClient`, LlamaIndex `TextEmbeddingsInference`, plain HTTP). Field
names, defaults and answers follow TEI's router/src/http/types.rs; TEI serves one model, so
`model` is an optional extension here (the default model when absent). Token-id `inputs` are
not accepted: send text. Errors take TEI's own body (`gateway.errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field, RootModel
from starlette.responses import Response

from adapters.base import ClassInput, SparseVector, Tokens
from gateway.api import texts as texts_api
from gateway.api import vllm
from gateway.api.context import guard_of, guarded, model_of, rank_texts
from gateway.api.wire import (
    Answer,
    Limit,
    Model,
    RankModes,
    Says,
    Text,
    Wire,
    one_of,
    parse,
    shapes,
)
from gateway.config import InputPolicy, Settings
from gateway.errors import invalid
from gateway.http.body import read_json
from gateway.http.dialects import API, settle
from gateway.http.responses import json_response, truncation_header
from gateway.serving import outputs, token_costs
from gateway.serving.embedding import EmbedJob, embed
from gateway.serving.encoding import check_dimensions, refuse_non_finite
from gateway.serving.inputs import Truncation, apply_template
from gateway.serving.ranking import cosine
from gateway.serving.registry import ServedModel
from gateway.state import GatewayRequest, registry_of, settings_of

_VERSION = "0.1.0"

_DIRECTIONS = ("right", "left")
Direction = one_of(_DIRECTIONS, any_case=True)
# A non-empty, non-blank string (as rerank's query).
Query = Annotated[
    str,
    Field(pattern=r"^[^\x00]*[^\x00\s][^\x00]*$"),
    Says("`{name}` is required and must be a non-empty string"),
]
TextOrTexts = Annotated[
    Text | Annotated[list[Text], Field(min_length=1), Limit("max_inputs")],
    Says("`{name}` must be a string or a non-empty list of strings, got {value}"),
]


class _Truncating(Wire):
    model: Model | None = None
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # type: ignore[valid-type]  # a runtime Literal

    @property
    def truncation(self) -> Truncation:
        """TEI's `truncate` (absent: the model's setting) and direction: `right` cuts the
        end, `left` the start."""
        if self.truncate is None:
            return Truncation()
        if not self.truncate:
            return Truncation("none")
        return Truncation("end" if self.truncation_direction == "right" else "start")


class TeiEmbedRequest(_Truncating):
    """`POST /embed` (and `POST /`): TEI's embed request."""

    inputs: TextOrTexts
    prompt_name: str | None = None
    normalize: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TeiEmbedSparseRequest(_Truncating):
    """`POST /embed_sparse` (and `POST /` for a sparse-only model): each input's non-zero
    weights over the vocabulary."""

    inputs: TextOrTexts
    prompt_name: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TeiEmbedAllRequest(TeiEmbedSparseRequest):
    """`POST /embed_all`: each input's token vectors (TEI: every token's hidden state; here
    what the model's multivector output computes, e.g. ColBERT's)."""


def _predict_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return "a text"
    if not isinstance(value, list) or not value:
        return None
    return "a list of inputs" if isinstance(value[0], list) else "a text or pair"


_PREDICT_SHAPES = (
    "a text, a list of one or two texts (a text, or a (text, text_pair) pair), or a "
    "non-empty list of such lists"
)
# One or two texts: a text alone, or a (text, text_pair) pair.
TextOrPair = Annotated[list[Text], Field(min_length=1, max_length=2)]


class TeiPredictRequest(Wire):
    """`POST /predict` (and `POST /` for a classifier): label scores of one input (a text,
    `[text]` or the pair `[text, text_pair]`) or of a batch (`[[text], [text, text_pair],
    ...]`), as TEI reads `inputs`: a list of strings is one input, never a batch."""

    model: Model | None = None
    inputs: Annotated[
        # shapes() builds the tagged union at runtime: to mypy a call, not a type.
        shapes(  # type: ignore[valid-type]
            _predict_shape,
            a_text=Text,
            a_text_or_pair=TextOrPair,
            a_list_of_inputs=Annotated[list[TextOrPair], Field(min_length=1), Limit("max_inputs")],
        ),
        Says(f"`inputs` must be {_PREDICT_SHAPES}"),
    ]
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # type: ignore[valid-type]  # a runtime Literal
    raw_scores: bool = False

    @property
    def batched(self) -> bool:
        return isinstance(self.inputs, list) and isinstance(self.inputs[0], list)

    @property
    def class_inputs(self) -> list[ClassInput]:
        def one(value: str | list[str]) -> ClassInput:
            if isinstance(value, str):
                return value
            return value[0] if len(value) == 1 else (value[0], value[1])

        return [one(v) for v in self.inputs] if self.batched else [one(self.inputs)]

    @property
    def truncation(self) -> Truncation:
        return _Truncating(
            truncate=self.truncate, truncation_direction=self.truncation_direction
        ).truncation


class TeiRerankRequest(_Truncating, RankModes):
    """`POST /rerank` with `texts`: TEI's rerank request. Long texts are cut into chunks
    and scored by their best chunk, as every rerank route here does, so `truncate` changes
    nothing. `mode` and `weights` are additions (a model that ranks by its own outputs)."""

    query: Query
    texts: Annotated[
        list[Text],
        Field(min_length=1),
        Limit("max_rerank_documents"),
        Says("`texts` is required: a non-empty list of strings"),
    ]
    raw_scores: bool = False
    return_text: bool = False


class SimilarityInput(Wire):
    source_sentence: Text
    sentences: Annotated[list[Text], Field(min_length=1), Limit("max_inputs")]


class SimilarityParameters(Wire):
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # type: ignore[valid-type]  # a runtime Literal
    prompt_name: str | None = None


class TeiSimilarityRequest(Wire):
    """`POST /similarity` (and `POST /` with an `inputs` object): cosine of each sentence
    with the source sentence (InferenceClient.sentence_similarity)."""

    model: Model | None = None
    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None

    @property
    def options(self) -> SimilarityParameters:
        return self.parameters or SimilarityParameters()


class TeiTokenizeRequest(Wire):
    """`POST /tokenize` with `inputs`: TEI's tokenize request."""

    model: Model | None = None
    inputs: TextOrTexts
    add_special_tokens: bool = True
    prompt_name: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


TokenIdList = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class TeiDecodeRequest(Wire):
    """`POST /decode`: token ids (one list, or a list of lists) back to text."""

    model: Model | None = None
    ids: Annotated[
        TokenIdList | Annotated[list[TokenIdList], Field(min_length=1), Limit("max_inputs")],
        Says(
            "`ids` must be a non-empty list of token ids (integers >= 0) or of "
            "such lists, got {value}"
        ),
    ]
    skip_special_tokens: bool = True

    @property
    def rows(self) -> list[list[int]]:
        # Validation allows all lists or all ids (both non-empty); no lists means one row.
        rows = [list(r) for r in self.ids if isinstance(r, list)]
        return rows or [[i for i in self.ids if isinstance(i, int)]]


def root_shape(body: Any, outputs: Sequence[str] = ("dense",)) -> type[Wire]:
    """Which request `POST /` carries: an `inputs` object is sentence similarity (as
    `InferenceClient.sentence_similarity` sends it), `texts` a rerank; anything else is, as
    TEI's `/` is for the model it serves (`outputs`: what the model computes), predict for a
    classifier, embed_sparse for a sparse-only model (SPLADE), else embed."""
    if isinstance(body, dict) and isinstance(body.get("inputs"), dict):
        return TeiSimilarityRequest
    if isinstance(body, dict) and body.get("texts") is not None:
        return TeiRerankRequest
    if "dense" not in outputs and "classify" in outputs:
        return TeiPredictRequest
    if "dense" not in outputs and "sparse" in outputs:
        return TeiEmbedSparseRequest
    return TeiEmbedRequest


# -- response shapes --------------------------------------------------------------------------


class TeiEmbeddings(RootModel[list[list[float]]]):
    """`POST /embed` with `inputs`: one float vector per input."""


class TeiSparseValue(Answer):
    index: int
    value: float


class TeiSparseEmbeddings(RootModel[list[list[TeiSparseValue]]]):
    """`POST /embed_sparse`: per input its non-zero weights, by token id ascending."""


class TeiTokenEmbeddings(RootModel[list[list[list[float]]]]):
    """`POST /embed_all`: per input one vector per token."""


class TeiPrediction(Answer):
    score: float
    label: str


class TeiPredictions(RootModel[list[TeiPrediction] | list[list[TeiPrediction]]]):
    """`POST /predict`: one input's label scores, best first, or a list of them for a
    batch."""


class TeiRank(Answer):
    index: int
    score: float
    # With `return_text`.
    text: str | None = None


class TeiRanks(RootModel[list[TeiRank]]):
    """`POST /rerank` with `texts`: best score first."""


class TeiSimilarities(RootModel[list[float]]):
    """`POST /similarity`: one cosine per sentence."""


class TeiToken(Answer):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TeiTokens(RootModel[list[list[TeiToken]]]):
    """`POST /tokenize` with `inputs`: the tokens of each input."""


class TeiDecoded(RootModel[list[str]]):
    """`POST /decode`: one text per id list."""


class TeiInfo(Answer):
    """`GET /info`: the default model and the server's limits (`dimension` and `models`, every
    served name, are additions)."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, Any]
    dimension: int | None
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None
    models: list[str]


class TeiErrorBody(Answer):
    """TEI's error body, on TEI's routes."""

    error: str
    error_type: str


# -- request to engine input ------------------------------------------------------------------


def with_prompt(
    policy: InputPolicy, prompt_name: str | None, texts: Sequence[str], param: str = "prompt_name"
) -> list[str]:
    """The texts with the model's prompt of that name applied (TEI's `prompt_name`)."""
    if prompt_name is None:
        return list(texts)
    template = policy.prompts.get(prompt_name)
    if template is None:
        raise invalid(
            f"`{param}` {prompt_name!r} is not one of the model's prompts {sorted(policy.prompts)}",
            param=param,
        )
    return [apply_template(template, t) for t in texts]


def cut_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first `dimensions` components, renormalised when `normalize` (TEI's order)."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    kept = vectors[:, :dimensions]
    if not normalize:
        return kept
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    renormalised: np.ndarray = kept / np.where(norms == 0, 1, norms)
    return renormalised


# -- answers ----------------------------------------------------------------------------------


def rerank_answer(
    scores: np.ndarray, texts: Sequence[str], return_text: bool
) -> list[dict[str, Any]]:
    """TEI's bare array `[{index, score, text?}]`, best score first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [
        {"index": i, "score": float(scores[i]), **({"text": texts[i]} if return_text else {})}
        for i in order
    ]


def sparse_answer(vectors: Sequence[SparseVector]) -> list[list[dict[str, Any]]]:
    """TEI's `[[{index, value}]]`: the non-zero weights of each input."""
    return [
        [
            {"index": i, "value": w}
            for i, w in zip(v.indices.tolist(), v.values.astype(np.float32).tolist())
        ]
        for v in vectors
    ]


def predictions_answer(scores: np.ndarray, labels: Sequence[str], batched: bool) -> list[Any]:
    """TEI's predict answer: per input `[{score, label}]` best first; one input alone, a
    batch as a list of them."""
    answers = [
        [
            {"score": float(row[j]), "label": labels[j]}
            for j in sorted(range(len(labels)), key=lambda j: -row[j])
        ]
        for row in scores
    ]
    return answers if batched else answers[0]


def tokens_answer(tokens: Sequence[Tokens], texts: Sequence[str]) -> list[list[dict[str, Any]]]:
    """TEI's `[[{id, text, special, start, stop}]]`: a token's `text` is its span of the
    input, or the token's own string where it has none (added special tokens)."""
    out = []
    for row, text in zip(tokens, texts):
        out.append(
            [
                {
                    "id": i,
                    "text": text[span[0] : span[1]] if span else string,
                    "special": special,
                    "start": span[0] if span else None,
                    "stop": span[1] if span else None,
                }
                for i, string, special, span in zip(row.ids, row.strings, row.special, row.offsets)
            ]
        )
    return out


def info_answer(
    served: ServedModel, names: Sequence[str], settings: Settings, version: str
) -> dict[str, Any]:
    """TEI's `GET /info` for the default model, with the server's limits; `dimension` and
    `models` (every served name) are additions."""
    facts = served.engine.facts
    spec = served.engine.spec
    model_type: dict[str, Any] = (
        {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
        if facts.scores_pairs
        else {"embedding": {"pooling": "model default"}}
    )
    return {
        "model_id": served.name,
        "model_sha": None,
        "model_dtype": spec.dtype,
        "model_type": model_type,
        "dimension": facts.dimension or None,
        "max_concurrent_requests": settings.max_inflight_inputs,
        "max_input_length": facts.max_model_len,
        "max_batch_tokens": settings.max_request_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": settings.max_inputs,
        "auto_truncate": served.policy.truncate != "none",
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
        "models": list(names),
    }


# -- handlers ---------------------------------------------------------------------------------


async def embed_route(request: GatewayRequest) -> Response:
    """POST /embed: TEI's `{"inputs"}`, or the texts API's `{"texts"}`, by the body."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.TEXTS:
        return await texts_api.embed(request, body)
    return await _embed(request, body)


async def _embed(request: GatewayRequest, body: Any) -> Response:
    req = parse(TeiEmbedRequest, body, settings_of(request))
    served = model_of(request, req.model)
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    texts = with_prompt(served.policy, req.prompt_name, req.texts)
    job = EmbedJob(served, served.name, texts, None, req.truncation, normalize=req.normalize)
    batch = await embed(job, guard_of(request))
    vectors = cut_dimensions(batch.vectors, req.dimensions, req.normalize)
    refuse_non_finite(vectors)
    return json_response(
        list(np.ascontiguousarray(vectors, dtype="<f4")), headers=truncation_header(batch)
    )


async def embed_sparse_route(request: GatewayRequest, body: Any | None = None) -> Response:
    """POST /embed_sparse: each input's non-zero weights `[[{index, value}]]`."""
    body = await read_json(request) if body is None else body
    req = parse(TeiEmbedSparseRequest, body, settings_of(request))
    served = model_of(request, req.model)
    texts = with_prompt(served.policy, req.prompt_name, req.texts)
    job = EmbedJob(served, served.name, texts, None, req.truncation)
    batch = await outputs.embed_sparse(job, guard_of(request))
    size = sum(len(v.indices) for v in batch.vectors)
    answer = await token_costs.built(size, lambda: json_response(sparse_answer(batch.vectors)))
    answer.headers.update(truncation_header(batch))
    return answer


async def embed_all(request: GatewayRequest) -> Response:
    """POST /embed_all: each input's token vectors `[[[f32]]]`, at most --max-token-vectors
    tokens per request."""
    req = parse(TeiEmbedAllRequest, await read_json(request), settings_of(request))
    served = model_of(request, req.model)
    texts = with_prompt(served.policy, req.prompt_name, req.texts)
    job = EmbedJob(served, served.name, texts, None, req.truncation)
    batch = await outputs.embed_tokens(job, guard_of(request))
    matrices = [np.ascontiguousarray(m, dtype="<f4") for m in batch.matrices]
    rows = sum(len(m) for m in matrices)
    answer = await token_costs.built(rows, lambda: json_response(matrices))
    answer.headers.update(truncation_header(batch))
    return answer


async def predict(request: GatewayRequest, body: Any | None = None) -> Response:
    """POST /predict: label scores (probabilities, or logits with `raw_scores`), best first."""
    body = await read_json(request) if body is None else body
    req = parse(TeiPredictRequest, body, settings_of(request))
    served = model_of(request, req.model)
    job = outputs.ClassifyJob(
        served, req.class_inputs, req.truncation, activation=not req.raw_scores
    )
    batch = await outputs.classify(job, guard_of(request))
    labels = served.engine.facts.labels
    return json_response(
        predictions_answer(batch.scores, labels, req.batched), headers=truncation_header(batch)
    )


async def rerank(request: GatewayRequest, body: Any) -> Response:
    """POST /rerank with `texts` (called by the rerank handler once the body says TEI)."""
    req = parse(TeiRerankRequest, body, settings_of(request))
    served = model_of(request, req.model, scoring=True)
    ranking = await rank_texts(
        request, served, req.query, req.texts, not req.raw_scores, req.mode, req.rank_weights
    )
    return json_response(rerank_answer(ranking.scores, req.texts, req.return_text))


async def similarity(request: GatewayRequest, body: Any | None = None) -> Response:
    """POST /similarity: cosine of each sentence with the source sentence."""
    body = await read_json(request) if body is None else body
    req = parse(TeiSimilarityRequest, body, settings_of(request))
    served = model_of(request, req.model)
    options = req.options
    texts = with_prompt(
        served.policy,
        options.prompt_name,
        [req.inputs.source_sentence, *req.inputs.sentences],
        param="parameters",
    )
    truncation = _Truncating(
        truncate=options.truncate, truncation_direction=options.truncation_direction
    ).truncation
    batch = await embed(EmbedJob(served, served.name, texts, None, truncation), guard_of(request))
    refuse_non_finite(batch.vectors)
    return json_response([float(s) for s in cosine(batch.vectors[0], batch.vectors[1:])])


async def tokenize_route(request: GatewayRequest) -> Response:
    """POST /tokenize: TEI's (`inputs`) or vLLM's (`prompt`), by the body."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.VLLM:
        return await vllm.tokenize(request, body)
    settings = settings_of(request)
    req = parse(TeiTokenizeRequest, body, settings)
    served = model_of(request, req.model)
    texts = with_prompt(served.policy, req.prompt_name, req.texts)
    token_costs.check_texts(texts, served, settings, "inputs")
    tokens = await guarded(
        request,
        served,
        len(texts),
        lambda: served.engine.tokenize(texts, add_special_tokens=req.add_special_tokens),
    )
    count = sum(len(row.ids) for row in tokens)
    token_costs.check_returned(count, settings, "inputs")
    return await token_costs.built(count, lambda: json_response(tokens_answer(tokens, texts)))


async def decode(request: GatewayRequest) -> Response:
    """POST /decode: token ids back to text, one string per id list."""
    settings = settings_of(request)
    req = parse(TeiDecodeRequest, await read_json(request), settings)
    served = model_of(request, req.model)
    token_costs.check_ids(req.rows, settings, "ids")
    texts = await guarded(
        request,
        served,
        len(req.rows),
        lambda: served.engine.detokenize(req.rows, skip_special_tokens=req.skip_special_tokens),
    )
    return await token_costs.built(sum(map(len, req.rows)), lambda: json_response(texts))


async def info(request: GatewayRequest) -> Response:
    """GET /info: TEI's model and limits description, for the default model."""
    served = model_of(request, None)
    names = [name for name, _ in registry_of(request).names()]
    return json_response(info_answer(served, names, settings_of(request), _VERSION))


async def root(request: GatewayRequest) -> Response:
    """POST /: TEI's default route, where `InferenceClient(model="http://host:port")` posts:
    an `inputs` object is sentence similarity, `query` with `texts` a rerank, else what the
    model serves: predict for a classifier, embed_sparse for a sparse-only model, else embed."""
    body = await read_json(request)
    name = body.get("model") if isinstance(body, dict) else None
    served = model_of(request, name if isinstance(name, str) else None)
    shape = root_shape(body, served.engine.facts.outputs)
    if shape is TeiSimilarityRequest:
        return await similarity(request, body)
    if shape is TeiRerankRequest:
        return await rerank(request, body)
    if shape is TeiPredictRequest:
        return await predict(request, body)
    if shape is TeiEmbedSparseRequest:
        return await embed_sparse_route(request, body)
    return await _embed(request, body)
