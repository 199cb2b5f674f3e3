"""Repeated inputs through the real engine: embedded once, answered in place, charged each."""

from __future__ import annotations

import httpx
import numpy as np

from harness.gateway import Gateway
from tests.e2e.conftest import MINILM


def test_repeated_inputs_get_the_reference_vector_at_every_position(
    gateway: Gateway, st_minilm
) -> None:
    texts = ["a repeated sentence", "another one", "a repeated sentence", "a repeated sentence"]
    response = httpx.post(
        gateway.base_url + "/v1/embeddings", timeout=120, json={"model": MINILM, "input": texts}
    )
    assert response.status_code == 200
    body = response.json()
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    reference = st_minilm.encode(texts, convert_to_numpy=True)
    cosines = (vectors * reference).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosines.min() >= 0.9999
    np.testing.assert_array_equal(vectors[0], vectors[2])
    tokens = [len(ids) for ids in st_minilm.tokenizer(texts)["input_ids"]]
    assert body["usage"]["prompt_tokens"] == sum(tokens)
