"""Sequence classifiers through the real engine: label scores equal transformers'
AutoModelForSequenceClassification (softmax, sigmoid per label for a multi-label model, raw
logits without activation), for texts and text pairs, with `embed`'s limits."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import EmbedOptions, InvalidInput
from harness.models import SENTIMENT_LABELS

pytestmark = [
    pytest.mark.engine,
    # vLLM's shut-down engine leaves a ZeroMQ context to the garbage collector.
    pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning"),
]
INPUTS = ["what a lovely day", ("is it raining?", "the sun is out all day"), "meh"]


@pytest.fixture(scope="module")
def classifier(start_engine, classifier_path):
    return start_engine(classifier_path)


@pytest.fixture(scope="module")
def multi_label(start_engine, multi_label_path):
    return start_engine(multi_label_path)


def logits(folder, inputs) -> np.ndarray:
    """transformers' logits, one input at a time (pairs as text, text_pair)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows = []
    with torch.no_grad():
        for item in inputs:
            encoded = tokenizer(*((item,) if isinstance(item, str) else item), return_tensors="pt")
            rows.append(model(**encoded).logits[0].numpy())
    return np.array(rows, dtype=np.float64)


def test_labels_in_id_order(classifier, multi_label) -> None:
    assert classifier.facts.outputs == ("classify",) and not classifier.facts.scores_pairs
    assert classifier.facts.labels == SENTIMENT_LABELS and not classifier.facts.multi_label
    assert multi_label.facts.labels == SENTIMENT_LABELS and multi_label.facts.multi_label


def test_scores_equal_transformers(
    classifier, multi_label, loop, classifier_path, multi_label_path
):
    gaps = {}
    expected = logits(classifier_path, INPUTS)
    softmax = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    probs = loop.run_until_complete(classifier.classify(INPUTS))
    raw = loop.run_until_complete(classifier.classify(INPUTS, activation=False))
    assert probs.scores.shape == (3, 3) and probs.scores.dtype == np.float64
    np.testing.assert_allclose(probs.scores, softmax, rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw.scores, expected, rtol=0, atol=1e-5)
    gaps["softmax"] = float(np.abs(probs.scores - softmax).max())
    gaps["logits"] = float(np.abs(raw.scores - expected).max())
    expected = logits(multi_label_path, INPUTS)
    sigmoid = 1 / (1 + np.exp(-expected))
    multi = loop.run_until_complete(multi_label.classify(INPUTS))
    np.testing.assert_allclose(multi.scores, sigmoid, rtol=0, atol=1e-5)
    gaps["sigmoid"] = float(np.abs(multi.scores - sigmoid).max())
    print("classify max |vLLM - transformers|:", gaps)
    # The pair was read as a pair: its segment ids matter to BERT.
    alone = loop.run_until_complete(classifier.classify(["is it raining? the sun is out all day"]))
    assert not np.allclose(alone.scores[0], probs.scores[1], atol=1e-3)


def test_pairs_truncate_from_the_longer_part(classifier, loop) -> None:
    pair = ("short question", "a long document " * 60)
    with pytest.raises(InvalidInput, match=r"input 1 has \d+ tokens"):
        loop.run_until_complete(classifier.classify(["fits", pair]))
    with pytest.raises(InvalidInput, match=r"input 1 has \d+ tokens"):
        loop.run_until_complete(classifier.classify([("a", "b"), "word " * 200]))
    batch = loop.run_until_complete(
        classifier.classify(["fits", pair, "word " * 200], EmbedOptions(truncate="end"))
    )
    assert batch.truncated == (1, 2) and batch.token_counts[1:] == [128, 128]
    with pytest.raises(InvalidInput, match="a request may have at most 5"):
        loop.run_until_complete(
            classifier.classify([pair], EmbedOptions(truncate="end", max_total_tokens=5))
        )


def test_other_outputs_are_refused(classifier, loop) -> None:
    with pytest.raises(InvalidInput, match="has no dense output; it computes: classify"):
        loop.run_until_complete(classifier.embed(["a"]))
    with pytest.raises(InvalidInput, match="has no sparse output"):
        loop.run_until_complete(classifier.embed_sparse(["a"]))
