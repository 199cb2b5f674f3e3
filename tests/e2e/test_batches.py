"""A Batch API job through the real vLLM engine, driven by the real openai client: its
vectors are the ones /v1/embeddings returns for the same requests."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import openai
import pytest

from harness.gateway import Gateway
from tests.e2e.conftest import MINILM


@pytest.fixture(scope="module")
def client(gateway: Gateway):
    with openai.OpenAI(
        base_url=gateway.openai_base_url, api_key="unused", max_retries=0
    ) as openai_client:
        yield openai_client


def test_a_batch_gives_the_vectors_of_the_embeddings_route(client: openai.OpenAI) -> None:
    bodies = [
        {"model": MINILM, "input": [f"document number {i}", "The capital of France."]}
        for i in range(20)
    ]
    bodies.append({"model": MINILM, "input": "matryoshka", "dimensions": 64})
    lines = [
        json.dumps(
            {"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
        )
        for i, body in enumerate(bodies)
    ]
    lines.append(
        json.dumps(
            {
                "custom_id": "too-long",
                "method": "POST",
                "url": "/v1/embeddings",
                # 302 tokens for a 256-token window; few enough characters that the token
                # count, not the character bound checked before tokenizing, refuses it.
                "body": {"model": MINILM, "input": "word " * 300},
            }
        )
    )
    uploaded = client.files.create(
        file=("docs.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.monotonic() + 300
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 22, "completed": 21, "failed": 1}

    outputs = {}
    for text in client.files.content(batch.output_file_id).text.splitlines():
        result = json.loads(text)
        outputs[result["custom_id"]] = result["response"]["body"]
    for i, body in enumerate(bodies):
        direct = client.embeddings.create(**body, encoding_format="float")
        got = np.array([d["embedding"] for d in outputs[f"doc-{i}"]["data"]])
        want = np.array([d.embedding for d in direct.data])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert outputs[f"doc-{i}"]["usage"]["prompt_tokens"] == direct.usage.prompt_tokens
    # The refused line consumed nothing: usage is the answered lines' tokens.
    tokens = sum(body["usage"]["prompt_tokens"] for body in outputs.values())
    assert batch.usage is not None
    assert batch.usage.input_tokens == batch.usage.total_tokens == tokens > 0
    [error] = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert error["custom_id"] == "too-long"
    assert error["response"]["status_code"] == 400
    assert "302 tokens" in error["response"]["body"]["error"]["message"]
