"""Handlers of the routes other servers' clients call unchanged: the seed service's and TEI's
`/embed`, TEI's `/rerank` (with `texts`), `/similarity`, `/tokenize`, `/decode`, `/info` and
`POST /`, vLLM's `/score`, `/tokenize` (with `prompt`) and `/detokenize`, and
`GET /v1/models/{id}`. Shapes live in seed.py, tei.py and vllm_api.py; errors take each
dialect's body in errors.py. Requests without `model` go to the default model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from starlette.responses import Response
from starlette.routing import Route

from gateway import tei, token_costs, vllm_api
from gateway.admission import run_guarded
from gateway.body import read_json
from gateway.config import Settings
from gateway.dialects import API, settle
from gateway.encoding import check_dimensions, refuse_non_finite
from gateway.errors import APIError, ErrorKind, brief
from gateway.registry import ServedModel
from gateway.request_context import note
from gateway.rerank import Ranking, RerankRequest, cosine, rank
from gateway.routes import _STARTED, embed, json_response, registry_of, truncation_header
from gateway.schemas import Truncation, parse
from gateway.seed import SeedEmbedRequest
from gateway.state import GatewayRequest

_VERSION = "0.1.0"
T = TypeVar("T")


def _model(request: GatewayRequest, name: str | None, *, scoring: bool = False) -> ServedModel:
    registry = registry_of(request)
    return registry.resolve(name) if name is not None else registry.default_model(scoring=scoring)


def _settings(request: GatewayRequest) -> Settings:
    return request.state["settings"]


# -- /embed: the seed's (texts) or TEI's (inputs) ---------------------------------------------


async def embed_route(request: GatewayRequest) -> Response:
    """POST /embed: the seed service's `{"texts"}` or TEI's `{"inputs"}`, by the body."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.SEED:
        return await _seed_embed(request, body)
    return await _tei_embed(request, body)


async def _seed_embed(request: GatewayRequest, body: Any) -> Response:
    req = parse(SeedEmbedRequest, body, _settings(request))
    served = _model(request, req.model)
    batch = await embed(request, served, req.model or served.name, req.texts, None, Truncation())
    refuse_non_finite(batch.vectors)
    return json_response({"embeddings": list(batch.vectors)}, headers=truncation_header(batch))


async def _tei_embed(request: GatewayRequest, body: Any) -> Response:
    req = parse(tei.TeiEmbedRequest, body, _settings(request))
    served = _model(request, req.model)
    check_dimensions(req.dimensions, served.engine.facts.dimension)
    texts = tei.with_prompt(served.policy, req.prompt_name, req.texts)
    batch = await embed(
        request, served, served.name, texts, None, req.truncation, normalize=req.normalize
    )
    vectors = tei.cut_dimensions(batch.vectors, req.dimensions, req.normalize)
    refuse_non_finite(vectors)
    return json_response(
        list(np.ascontiguousarray(vectors, dtype="<f4")), headers=truncation_header(batch)
    )


# -- TEI --------------------------------------------------------------------------------------


async def tei_rerank(request: GatewayRequest, body: Any) -> Response:
    """POST /rerank with `texts` (called by the rerank handler once the body says TEI)."""
    req = parse(tei.TeiRerankRequest, body, _settings(request))
    served = _model(request, req.model, scoring=True)
    ranking = await _rank(request, served, req.query, req.texts, not req.raw_scores)
    return json_response(tei.rerank_answer(ranking.scores, req.texts, req.return_text))


async def _rank(
    request: GatewayRequest,
    served: ServedModel,
    query: str,
    texts: list[str],
    activation: bool | None,
) -> Ranking:
    # The rerank routes' own request: chunking and scoring are theirs.
    req = RerankRequest.model_construct(
        model=served.name,
        query=query,
        documents=texts,
        top_n=None,
        return_documents=False,
        rank_fields=None,
        max_tokens_per_doc=None,
        max_chunks_per_doc=None,
        use_activation=activation,
    )
    req._texts = texts
    note(request, model=served.name, inputs=len(texts))
    return await rank(request, served, req)


async def similarity(request: GatewayRequest, body: Any | None = None) -> Response:
    """POST /similarity: cosine of each sentence with the source sentence."""
    body = await read_json(request) if body is None else body
    req = parse(tei.TeiSimilarityRequest, body, _settings(request))
    served = _model(request, req.model)
    options = req.options
    texts = tei.with_prompt(
        served.policy,
        options.prompt_name,
        [req.inputs.source_sentence, *req.inputs.sentences],
        param="parameters",
    )
    truncation = tei._Truncating(
        truncate=options.truncate, truncation_direction=options.truncation_direction
    ).truncation
    batch = await embed(request, served, served.name, texts, None, truncation)
    refuse_non_finite(batch.vectors)
    return json_response([float(s) for s in cosine(batch.vectors[0], batch.vectors[1:])])


async def tokenize_route(request: GatewayRequest) -> Response:
    """POST /tokenize: TEI's (`inputs`) or vLLM's (`prompt`), by the body."""
    body = await read_json(request)
    if settle(request.scope, body).api is API.VLLM:
        return await _vllm_tokenize(request, body)
    settings = _settings(request)
    req = parse(tei.TeiTokenizeRequest, body, settings)
    served = _model(request, req.model)
    texts = tei.with_prompt(served.policy, req.prompt_name, req.texts)
    token_costs.check_texts(texts, served, settings, "inputs")
    tokens = await _engine(
        request,
        served,
        len(texts),
        lambda: served.engine.tokenize(texts, add_special_tokens=req.add_special_tokens),
    )
    count = sum(len(row.ids) for row in tokens)
    token_costs.check_returned(count, settings, "inputs")
    return await token_costs.built(count, lambda: json_response(tei.tokens_answer(tokens, texts)))


async def decode(request: GatewayRequest) -> Response:
    """POST /decode: token ids back to text, one string per id list."""
    settings = _settings(request)
    req = parse(tei.TeiDecodeRequest, await read_json(request), settings)
    served = _model(request, req.model)
    token_costs.check_ids(req.rows, settings, "ids")
    texts = await _engine(
        request,
        served,
        len(req.rows),
        lambda: served.engine.detokenize(req.rows, skip_special_tokens=req.skip_special_tokens),
    )
    return await token_costs.built(sum(map(len, req.rows)), lambda: json_response(texts))


async def info(request: GatewayRequest) -> Response:
    """GET /info: TEI's model and limits description, for the default model."""
    served = _model(request, None)
    names = [name for name, _ in registry_of(request).names()]
    return json_response(tei.info_answer(served, names, _settings(request), _VERSION))


async def tei_root(request: GatewayRequest) -> Response:
    """POST /: TEI's default route, where `InferenceClient(model="http://host:port")` posts:
    an `inputs` object is sentence similarity, `query` with `texts` a rerank, else embed."""
    body = await read_json(request)
    shape = tei.root_shape(body)
    if shape is tei.TeiSimilarityRequest:
        return await similarity(request, body)
    if shape is tei.TeiRerankRequest:
        return await tei_rerank(request, body)
    return await _tei_embed(request, body)


# -- vLLM -------------------------------------------------------------------------------------


async def score(request: GatewayRequest) -> Response:
    """POST /score, /v1/score: vLLM's pair scores (`text_1`/`text_2` or
    `queries`/`documents`), each pair scored as the rerank routes score it."""
    body = await read_json(request)
    settings = _settings(request)
    req = parse(vllm_api.score_shape(body), body, settings)
    served = _model(request, req.model, scoring=True)
    pairs = req.pairs()
    token_costs.check_pairs(pairs, settings, req.sides()[3])
    scores = np.zeros(len(pairs))
    tokens = 0
    for query in dict.fromkeys(q for q, _ in pairs):  # one rerank per distinct first text
        where = [i for i, (q, _) in enumerate(pairs) if q == query]
        ranking = await _rank(
            request, served, query, [pairs[i][1] for i in where], req.use_activation
        )
        scores[where] = ranking.scores
        tokens += ranking.prompt_tokens
    return json_response(vllm_api.score_answer(req.model or served.name, scores, tokens))


async def _vllm_tokenize(request: GatewayRequest, body: Any) -> Response:
    settings = _settings(request)
    req = parse(vllm_api.VllmTokenizeRequest, body, settings)
    served = _model(request, req.model)
    token_costs.check_texts([req.prompt], served, settings, "prompt")
    tokens = (
        await _engine(
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
    settings = _settings(request)
    req = parse(vllm_api.DetokenizeRequest, await read_json(request), settings)
    served = _model(request, req.model)
    token_costs.check_ids([req.tokens], settings, "tokens")
    texts = await _engine(request, served, 1, lambda: served.engine.detokenize([req.tokens]))
    return await token_costs.built(len(req.tokens), lambda: json_response({"prompt": texts[0]}))


async def _engine(
    request: GatewayRequest, served: ServedModel, inputs: int, call: Callable[[], Awaitable[T]]
) -> T:
    note(request, model=served.name, inputs=inputs)
    return await run_guarded(request, served, inputs, call)


# -- OpenAI -----------------------------------------------------------------------------------


async def retrieve_model(request: GatewayRequest) -> Response:
    """GET /v1/models/{id}: one served name or alias (openai `client.models.retrieve`)."""
    wanted = request.path_params["model"]
    for name, root in registry_of(request).names():
        if name == wanted:
            return json_response(
                {
                    "id": name,
                    "object": "model",
                    "created": _STARTED,
                    "owned_by": "embedding-gateway",
                    "root": root,
                }
            )
    raise APIError(
        ErrorKind.MODEL_NOT_FOUND, f"The model {brief(wanted)} does not exist", param="model"
    )


NATIVE_ROUTES: list[Route] = [
    Route("/embed", embed_route, methods=["POST"]),
    Route("/", tei_root, methods=["POST"]),
    Route("/similarity", similarity, methods=["POST"]),
    Route("/tokenize", tokenize_route, methods=["POST"]),
    Route("/decode", decode, methods=["POST"]),
    Route("/info", info, methods=["GET"]),
    Route("/score", score, methods=["POST"]),
    Route("/v1/score", score, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    # `{model:path}`: model ids hold slashes (sentence-transformers/all-MiniLM-L6-v2).
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    Route("/models/{model:path}", retrieve_model, methods=["GET"]),
]
