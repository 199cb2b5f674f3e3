"""One real gateway per test session: a subprocess started the way a user starts it, serving
the real vLLM engine. Engine start takes about a minute on CPU, so every end-to-end test shares
it. Tests that need more models add entries to `served_models` (the YAML `models:` list)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import resolve_model_path
from harness.gateway import Gateway, start_gateway
from harness.paths import REPO
from tests.conftest import TIKTOKEN_DIR

START_TIMEOUT_S = 600
MINILM = "all-MiniLM-L6-v2"
CROSS_ENCODER = "test-cross-encoder"
LLM_RERANKER = "test-llm-reranker"
# The built-in model again, with truncation switched on for the model (a second engine).
MINILM_TRUNCATING = "minilm-truncating"
QWEN3_TEMPLATE = REPO / "deploy" / "qwen3_reranker.jinja"
# Prompt templates on the built-in model, and virtual names applying them; they cost no engine.
MINILM_PROMPTS = {
    "query": "query: ",
    "document": "passage: ",
    "qwen-query": "Instruct: Given a question, retrieve passages that answer it\nQuery: {text}",
}
MINILM_PROMPT_ALIASES = {"minilm-query": "query", "minilm-qwen3-query": "qwen-query"}


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return resolve_model_path("builtin:" + MINILM)


@pytest.fixture(scope="session")
def cross_encoder_path(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cross-encoder no download provides: MiniLM's encoder under a seeded one-label head,
    saved as transformers saves a fine-tuned reranker (BertForSequenceClassification)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    with torch.no_grad():
        # Wide enough weights that scores spread over (0, 1) and differ clearly from 0.5.
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.fill_(0.1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def llm_reranker_path(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Qwen3-Reranker-shaped causal LM, tiny and randomly initialised (seeded), with the
    MiniLM tokenizer (which has the tokens "no" and "yes"): it exercises vLLM's
    hf_overrides + score template path at a fraction of a real model's start-up cost."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("llm-reranker")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    # head_dim 64: vLLM's CPU attention kernels do not support smaller heads.
    config = Qwen3Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def served_models(cross_encoder_path: str, llm_reranker_path: str) -> list[dict]:
    """The YAML `models:` list of the shared server: the built-in model first, then a
    cross-encoder and an LLM reranker (each its own engine, with a smaller memory share)
    for the rerank tests."""
    return [
        {
            "name": MINILM,
            "path": "builtin:" + MINILM,
            # Requests that name no model (the seed's and TEI's routes) get this one.
            "default": True,
            "aliases": ["sentence-transformers/all-MiniLM-L6-v2"],
            "prompts": MINILM_PROMPTS,
            "prompt_aliases": MINILM_PROMPT_ALIASES,
        },
        {
            "name": MINILM_TRUNCATING,
            "path": "builtin:" + MINILM,
            "truncate": "end",
            "gpu_memory_utilization": 0.1,
        },
        {
            "name": CROSS_ENCODER,
            "path": cross_encoder_path,
            "rerank_kind": "cross_encoder",
            "gpu_memory_utilization": 0.1,
        },
        {
            "name": LLM_RERANKER,
            "path": llm_reranker_path,
            "rerank_kind": "llm",
            "hf_overrides": {
                "architectures": ["Qwen3ForSequenceClassification"],
                "classifier_from_token": ["no", "yes"],
                "is_original_qwen3_reranker": True,
            },
            "score_template": str(QWEN3_TEMPLATE),
            "gpu_memory_utilization": 0.1,
        },
    ]


@pytest.fixture(scope="session")
def gateway(
    served_models: list[dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    # The option, not only the environment: the server must find the file either way.
    server = start_gateway(
        tmp_path_factory.mktemp("gateway"),
        models=served_models,
        config={"tiktoken_cache_dir": TIKTOKEN_DIR},
        ready_timeout=START_TIMEOUT_S,
    )
    try:
        yield server
    finally:
        server.stop(timeout=60)


@pytest.fixture(scope="session")
def st_minilm(minilm_path: str):
    """The sentence-transformers reference for the built-in model."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.engine)
