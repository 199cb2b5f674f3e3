"""A plain encoder (the built-in MiniLM) through the real engine: dense vectors and, from the
same engine, its token vectors, which are transformers' last hidden states as they are."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EmbedOptions, EngineSpec, InvalidInput
from adapters.vllm import VLLMEngine
from harness.models import COLBERT_DIM, minilm_path

pytestmark = [
    pytest.mark.engine,
    # vLLM's shut-down engine leaves a ZeroMQ context to the garbage collector.
    pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning"),
]
TEXTS = ["the cat sat on the mat", "token vectors of a plain encoder"]


@pytest.fixture(scope="module")
def engine(start_engine):
    return start_engine(minilm_path())


def test_encoder_offers_dense_and_token_vectors(engine) -> None:
    assert engine.facts.outputs == ("dense", "multivector")
    assert engine.facts.dimension == engine.facts.token_dimension == 384


def test_token_vectors_are_the_last_hidden_states(engine, loop) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()
    batch = loop.run_until_complete(engine.embed_tokens(TEXTS))
    gap = 0.0
    for text, matrix in zip(TEXTS, batch.matrices):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].numpy()
        assert matrix.shape == hidden.shape and matrix.dtype == np.float32
        np.testing.assert_allclose(matrix, hidden, rtol=0, atol=1e-5)
        gap = max(gap, float(np.abs(matrix - hidden).max()))
    print("MiniLM token vectors max |vLLM - transformers|:", gap)
    assert list(batch.token_counts) == [m.shape[0] for m in batch.matrices]


def test_token_vectors_truncate_and_refuse_as_embed(engine, loop) -> None:
    cut = loop.run_until_complete(
        engine.embed_tokens(["word " * 300], EmbedOptions(truncate="start", max_tokens=8))
    )
    assert cut.truncated == (0,) and cut.matrices[0].shape == (8, 384)
    with pytest.raises(InvalidInput, match="accepts at most 128 tokens"):
        loop.run_until_complete(engine.embed_tokens(["word " * 300]))
    with pytest.raises(InvalidInput, match="has no sparse output; it computes: dense, multivector"):
        loop.run_until_complete(engine.embed_sparse(["a"]))


# -- a ColBERT checkpoint (colbert-ai's HF_ColBERT, `dim` in its config) ---------------------


@pytest.fixture(scope="module")
def colbert(start_engine, colbert_path):
    return start_engine(colbert_path)


def test_colbert_vectors_are_its_normalised_projection(colbert, loop, colbert_path) -> None:
    """colbert-ai's `ColBERT.doc` without its query/document marker tokens and punctuation
    mask (which its tokenizer wrapper and scorer add, not the checkpoint): linear(BERT's last
    hidden states), each L2-normalised."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    assert colbert.facts.outputs == ("multivector",)
    assert colbert.facts.token_dimension == COLBERT_DIM
    tokenizer = AutoTokenizer.from_pretrained(colbert_path)
    bert = BertModel.from_pretrained(colbert_path, add_pooling_layer=False).eval()
    linear = load_file(colbert_path / "model.safetensors")["linear.weight"]
    batch = loop.run_until_complete(colbert.embed_tokens(TEXTS))
    gap = 0.0
    for text, matrix in zip(TEXTS, batch.matrices):
        with torch.no_grad():
            hidden = bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            expected = torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-5)
        gap = max(gap, float(np.abs(matrix - expected).max()))
    print("ColBERT token vectors max |vLLM - reference|:", gap)
    with pytest.raises(InvalidInput, match="has no dense output; it computes: multivector"):
        loop.run_until_complete(colbert.embed(["a"]))


def test_a_configured_output_the_model_cannot_compute_fails_the_start(loop) -> None:
    spec = EngineSpec(
        name="minilm",
        model=minilm_path(),
        outputs=("dense", "sparse"),
        max_model_len=128,
        gpu_memory_utilization=0.05,
    )
    engine = VLLMEngine(spec)
    try:
        with pytest.raises(
            ValueError, match="cannot compute sparse; it can compute: dense, multivector"
        ):
            loop.run_until_complete(engine.start())
    finally:
        loop.run_until_complete(engine.shutdown())
