"""A bge-m3-shaped model (XLM-RoBERTa with sparse_linear.pt and colbert_linear.pt) through one
real engine: dense vectors, lexical weights and ColBERT vectors equal FlagEmbedding's.

The reference is FlagEmbedding 1.4.2's computation, written out here from its published source
(FlagEmbedding is not installed: it needs `datasets`, `peft` and `ir-datasets` at import):
`FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py` (`_dense_embedding` with "cls",
`_sparse_embedding(..., return_embedding=False)`, `_colbert_embedding`, and `_encode`'s
normalisation) and `FlagEmbedding/inference/embedder/encoder_only/m3.py`
(`encode_single_device`'s `_process_token_weights` and `_process_colbert_vecs`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from adapters.base import EmbedOptions, InvalidInput
from harness.models import BGE_M3_HIDDEN

pytestmark = [
    pytest.mark.engine,
    # vLLM's shut-down engine leaves a ZeroMQ context to the garbage collector.
    pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning"),
]
TEXTS = ["the cat sat on the mat", "the the the cat", "hybrid retrieval, dense and sparse"]


@pytest.fixture(scope="module")
def engine(start_engine, bge_m3_path):
    return start_engine(bge_m3_path)


def flag_m3(folder: Path, text: str) -> tuple[np.ndarray, dict[int, float], np.ndarray]:
    """BGEM3FlagModel(folder, use_fp16=False).encode(text, return_dense=True,
    return_sparse=True, return_colbert_vecs=True) for one text, as FlagEmbedding computes it."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sparse_linear = torch.nn.Linear(BGE_M3_HIDDEN, 1)
    sparse_linear.load_state_dict(torch.load(folder / "sparse_linear.pt"))
    colbert_linear = torch.nn.Linear(BGE_M3_HIDDEN, BGE_M3_HIDDEN)
    colbert_linear.load_state_dict(torch.load(folder / "colbert_linear.pt"))
    inputs = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, return_dict=True).last_hidden_state
        dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
        token_weights = torch.relu(sparse_linear(hidden)).squeeze(-1)
        colbert = colbert_linear(hidden[:, 1:]) * inputs["attention_mask"][:, 1:][:, :, None]
        colbert = torch.nn.functional.normalize(colbert, dim=-1)
    # _process_token_weights
    result: dict[int, float] = defaultdict(int)
    unused_tokens = set()
    for _token in ["cls_token", "eos_token", "pad_token", "unk_token"]:
        if _token in tokenizer.special_tokens_map:
            unused_tokens.add(tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[_token]))
    for w, idx in zip(token_weights[0].numpy(), inputs["input_ids"][0].tolist()):
        if idx not in unused_tokens and w > 0 and w > result[idx]:
            result[idx] = w
    # _process_colbert_vecs: "we don't use the embedding of cls, so select tokens_num-1"
    tokens_num = int(inputs["attention_mask"][0].sum())
    return dense[0].numpy(), dict(result), colbert[0].numpy()[: tokens_num - 1]


@pytest.fixture(scope="module")
def reference(bge_m3_path):
    return [flag_m3(bge_m3_path, text) for text in TEXTS]


def test_bge_m3_has_three_outputs_from_one_engine(engine) -> None:
    assert engine.facts.outputs == ("dense", "sparse", "multivector")
    assert engine.facts.dimension == engine.facts.token_dimension == BGE_M3_HIDDEN


def test_all_three_outputs_equal_flag_embedding(engine, loop, reference) -> None:
    async def together():
        # Requests of the three tasks in flight at once on the one engine.
        import asyncio

        return await asyncio.gather(
            engine.embed(TEXTS), engine.embed_sparse(TEXTS), engine.embed_tokens(TEXTS)
        )

    dense, sparse, tokens = loop.run_until_complete(together())
    gaps = {"dense": 0.0, "sparse": 0.0, "colbert": 0.0}
    for i, (ref_dense, ref_sparse, ref_colbert) in enumerate(reference):
        np.testing.assert_allclose(dense.vectors[i], ref_dense, rtol=0, atol=1e-5)
        vector = sparse.vectors[i]
        assert vector.indices.tolist() == sorted(ref_sparse)
        expected = np.array([ref_sparse[k] for k in sorted(ref_sparse)], dtype=np.float32)
        np.testing.assert_allclose(vector.values, expected, rtol=0, atol=1e-5)
        assert tokens.matrices[i].shape == ref_colbert.shape
        np.testing.assert_allclose(tokens.matrices[i], ref_colbert, rtol=0, atol=1e-5)
        gaps["dense"] = max(gaps["dense"], float(np.abs(dense.vectors[i] - ref_dense).max()))
        gaps["sparse"] = max(gaps["sparse"], float(np.abs(vector.values - expected).max()))
        gaps["colbert"] = max(
            gaps["colbert"], float(np.abs(tokens.matrices[i] - ref_colbert).max())
        )
    print("bge-m3 max |vLLM - FlagEmbedding|:", gaps)
    # "the the the cat": one weight for "the", its largest; no [CLS]/[SEP] entry.
    the, cat = (int(i) for i in engine._tokenizer("the cat", add_special_tokens=False)["input_ids"])
    assert sparse.vectors[1].indices.tolist() == sorted({the, cat} & set(reference[1][1]))


def test_token_vectors_without_normalisation(engine, loop) -> None:
    raw = loop.run_until_complete(engine.embed_tokens(["the cat"], EmbedOptions(normalize=False)))
    unit = loop.run_until_complete(engine.embed_tokens(["the cat"]))
    norms = np.linalg.norm(raw.matrices[0], axis=1, keepdims=True)
    np.testing.assert_allclose(raw.matrices[0] / norms, unit.matrices[0], atol=1e-5)
    assert not np.allclose(norms, 1.0)


def test_token_ids_and_truncation_as_embed(engine, loop) -> None:
    ids = engine._tokenizer("the cat sat")["input_ids"]
    by_ids = loop.run_until_complete(engine.embed_sparse([ids]))
    by_text = loop.run_until_complete(engine.embed_sparse(["the cat sat"]))
    np.testing.assert_array_equal(by_ids.vectors[0].indices, by_text.vectors[0].indices)
    cut = loop.run_until_complete(
        engine.embed_tokens(["word " * 50], EmbedOptions(truncate="end", max_tokens=10))
    )
    assert cut.truncated == (0,) and cut.matrices[0].shape == (9, BGE_M3_HIDDEN)
    with pytest.raises(InvalidInput, match="accepts at most 10 tokens"):
        loop.run_until_complete(engine.embed_tokens(["word " * 50], EmbedOptions(max_tokens=10)))
    with pytest.raises(InvalidInput, match="has no classify output"):
        loop.run_until_complete(engine.classify(["a"]))
