"""Two tenants' keys and the real openai client over an in-process app, for the tenancy tests."""

from __future__ import annotations

import io
import json

import openai
from starlette.testclient import TestClient

KEY_A = "team-a-0123456789abcdef0123456789abcdef"
KEY_B = "team-b-0123456789abcdef0123456789abcdef"
# One Batch API line (an embeddings request for the fake model).
LINE = json.dumps(
    {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "fake", "input": "x"},
    }
)


def as_key(gateway: TestClient, key: str) -> openai.OpenAI:
    # The real client over the in-process app (TestClient is an httpx.Client).
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=key, http_client=gateway, max_retries=0
    )


def upload(client: openai.OpenAI) -> str:
    data = io.BytesIO((LINE + "\n").encode())
    return client.files.create(file=("requests.jsonl", data), purpose="batch").id
