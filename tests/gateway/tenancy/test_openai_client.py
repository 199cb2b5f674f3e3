"""Two teams on one gateway, through the real openai client: each key sees only its own
files and batches, an admin key sees all, and a key past its request limit gets OpenAI's
429 and rate-limit headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.config import Settings
from tests.conftest import serving
from tests.gateway.tenancy.clients import KEY_A, KEY_B, LINE, as_key, upload

KEY_ADMIN = "admin-0123456789abcdef0123456789abcdef"
KEY_LIMITED = "limited-0123456789abcdef0123456789abcde"
KEY_FILE = f"""
- name: team-a
  key: {KEY_A}
- name: team-b
  key: {KEY_B}
- name: ops
  key: {KEY_ADMIN}
  admin: true
- name: small
  key: {KEY_LIMITED}
  rpm: 2
  tpm: 1000
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[TestClient]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEY_FILE)
    settings = Settings(api_key_file=str(keys), batch_dir=str(tmp_path / "batches"))
    # Slow enough that a batch is still running when a test cancels it.
    with serving(settings, fake=FakeEngine(latency_s=0.3)) as client:
        yield client


def test_a_key_cannot_see_or_touch_another_keys_file(gateway: TestClient) -> None:
    a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
    file_id = upload(a)
    for attempt in (
        lambda: b.files.retrieve(file_id),
        lambda: b.files.content(file_id),
        lambda: b.files.delete(file_id),
        lambda: b.batches.create(
            input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            attempt()
        assert refused.value.code == "not_found"
        assert file_id in refused.value.message
    assert [f.id for f in b.files.list()] == []
    assert [f.id for f in a.files.list()] == [file_id]
    assert a.files.retrieve(file_id).id == file_id
    assert a.files.content(file_id).text == LINE + "\n"


def test_a_key_cannot_see_or_cancel_another_keys_batch(gateway: TestClient) -> None:
    a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
    batch = a.batches.create(
        input_file_id=upload(a), endpoint="/v1/embeddings", completion_window="24h"
    )
    for attempt in (lambda: b.batches.retrieve(batch.id), lambda: b.batches.cancel(batch.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert [x.id for x in b.batches.list()] == []
    assert [x.id for x in a.batches.list()] == [batch.id]
    assert a.batches.retrieve(batch.id).id == batch.id
    assert a.batches.cancel(batch.id).status in ("cancelling", "cancelled")


def test_a_key_deletes_its_own_file_and_the_other_keys_file_stays(gateway: TestClient) -> None:
    a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
    mine, theirs = upload(a), upload(b)
    assert a.files.delete(mine).deleted
    assert [f.id for f in b.files.list()] == [theirs]


def test_an_admin_key_sees_every_keys_files_and_batches(gateway: TestClient) -> None:
    a, b, ops = (as_key(gateway, k) for k in (KEY_A, KEY_B, KEY_ADMIN))
    files = {upload(a), upload(b)}
    batch = b.batches.create(
        input_file_id=upload(b), endpoint="/v1/embeddings", completion_window="24h"
    )
    listed = {f.id for f in ops.files.list()}
    assert files <= listed
    assert ops.batches.retrieve(batch.id).id == batch.id
    assert batch.id in {x.id for x in ops.batches.list()}


def test_a_key_past_its_request_limit_gets_a_429_with_openais_headers(
    gateway: TestClient,
) -> None:
    small = as_key(gateway, KEY_LIMITED)
    first = small.embeddings.with_raw_response.create(model="fake", input="hello")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert first.parse().data
    second = small.embeddings.with_raw_response.create(model="fake", input="hello")
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    # The first request's tokens were counted once it was answered.
    used = first.parse().usage.prompt_tokens
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - used)
    with pytest.raises(openai.RateLimitError) as refused:
        small.embeddings.create(model="fake", input="hello")
    response = refused.value.response
    assert refused.value.code == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-limit-requests"] == "2"


def test_other_keys_are_not_limited_by_one_keys_limit(gateway: TestClient) -> None:
    small, a = as_key(gateway, KEY_LIMITED), as_key(gateway, KEY_A)
    for _ in range(2):
        small.embeddings.create(model="fake", input="x")
    with pytest.raises(openai.RateLimitError):
        small.embeddings.create(model="fake", input="x")
    answer = a.embeddings.with_raw_response.create(model="fake", input="x")
    assert answer.status_code == 200
    assert "x-ratelimit-limit-requests" not in answer.headers


def test_usage_per_key_name_in_metrics_and_never_the_key(gateway: TestClient) -> None:
    small = as_key(gateway, KEY_LIMITED)
    for _ in range(2):
        small.embeddings.create(model="fake", input="hello")
    with pytest.raises(openai.RateLimitError):
        small.embeddings.create(model="fake", input="hello")
    text = gateway.get("/metrics", headers={"Authorization": f"Bearer {KEY_A}"}).text
    assert 'embedding_gateway_key_requests_total{key="small",status="200"} 2.0' in text
    assert 'embedding_gateway_key_requests_total{key="small",status="429"} 1.0' in text
    assert 'embedding_gateway_key_rate_limited_total{key="small"} 1.0' in text
    assert 'embedding_gateway_key_tokens_total{key="small"}' in text
    assert KEY_LIMITED not in text


def test_an_error_answer_to_a_limited_key_carries_the_rate_limit_headers(
    gateway: TestClient,
) -> None:
    small = as_key(gateway, KEY_LIMITED)
    with pytest.raises(openai.NotFoundError) as refused:
        small.embeddings.create(model="no-such-model", input="x")
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "1"
