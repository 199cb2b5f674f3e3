"""Every route the gateway serves, by dialect; `gateway.app` (alone) mounts them."""

from __future__ import annotations

from starlette.routing import Route

from gateway import batches
from gateway.api import cohere, ollama, openai, openapi, probes, rerank, tei, vllm
from gateway.api.rerank import RERANK_PATHS

ROUTES = [
    Route("/v1/embeddings", openai.create_embeddings, methods=["POST"]),
    Route("/embeddings", openai.create_embeddings, methods=["POST"]),
    Route("/v1/embed", cohere.cohere_embed, methods=["POST"]),
    Route("/v2/embed", cohere.cohere_embed, methods=["POST"]),
    *(Route(path, rerank.rerank, methods=["POST"]) for path in RERANK_PATHS),
    Route("/v1/models", openai.list_models, methods=["GET"]),
    Route("/models", openai.list_models, methods=["GET"]),
    Route("/health", probes.health, methods=["GET"]),
    Route("/ready", probes.ready, methods=["GET"]),
    Route("/openapi.json", openapi.openapi, methods=["GET"]),
    *batches.ROUTES,
    Route("/metrics", probes.metrics, methods=["GET"]),
    # Other servers' dialects: TEI's, the plain texts API's /embed, vLLM's, Ollama's.
    Route("/embed", tei.embed_route, methods=["POST"]),
    Route("/", tei.root, methods=["POST"]),
    Route("/embed_sparse", tei.embed_sparse_route, methods=["POST"]),
    Route("/embed_all", tei.embed_all, methods=["POST"]),
    Route("/predict", tei.predict, methods=["POST"]),
    Route("/similarity", tei.similarity, methods=["POST"]),
    Route("/tokenize", tei.tokenize_route, methods=["POST"]),
    Route("/decode", tei.decode, methods=["POST"]),
    Route("/info", tei.info, methods=["GET"]),
    Route("/score", vllm.score, methods=["POST"]),
    Route("/v1/score", vllm.score, methods=["POST"]),
    Route("/detokenize", vllm.detokenize, methods=["POST"]),
    Route("/pooling", vllm.pooling, methods=["POST"]),
    Route("/classify", vllm.classify, methods=["POST"]),
    Route("/api/embed", ollama.api_embed, methods=["POST"]),
    Route("/api/embeddings", ollama.api_embeddings, methods=["POST"]),
    Route("/api/tags", ollama.api_tags, methods=["GET"]),
    Route("/api/show", ollama.api_show, methods=["POST"]),
    Route("/api/ps", ollama.api_ps, methods=["GET"]),
    Route("/api/version", ollama.api_version, methods=["GET"]),
    # `{model:path}`: model ids hold slashes (sentence-transformers/all-MiniLM-L6-v2).
    Route("/v1/models/{model:path}", openai.retrieve_model, methods=["GET"]),
    Route("/models/{model:path}", openai.retrieve_model, methods=["GET"]),
]
