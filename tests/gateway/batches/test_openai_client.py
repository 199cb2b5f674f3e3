"""The Batch API driven by the real openai client against gateway processes (fake engines):
a whole batch, per-line errors, cancel, and a crash in the middle of a batch."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from harness.gateway import Gateway, start_gateway
from tests.conftest import batch_progress

FINAL = ("completed", "failed", "cancelled", "expired")


def line(custom_id: str, body: dict, url: str = "/v1/embeddings") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def client_of(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


def upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch").id


def wait_for(
    client: openai.OpenAI, batch_id: str, until=lambda b: b.status in FINAL, timeout_s: float = 60
):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        assert time.monotonic() < deadline, f"batch stuck: {batch}"
        time.sleep(0.05)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def gateway(tmp_path: Path):
    served = start_gateway(
        tmp_path,
        fake_models={"fake": {}, "fake-ranker": {"scores_pairs": True}},
        args=["--batch-dir", str(tmp_path / "batches")],
    )
    yield served
    served.stop()


@pytest.fixture
def client(gateway: Gateway):
    # Closed explicitly: a pooled socket left to the garbage collector is a ResourceWarning.
    with client_of(gateway) as openai_client:
        yield openai_client


def test_a_batch_runs_end_to_end_with_the_openai_client(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    bodies = [
        {"model": "fake", "input": [f"text {i}", "shared"], "dimensions": 4} for i in range(6)
    ] + [{"model": "fake", "input": "b64", "encoding_format": "base64"}]
    lines = [line(f"req-{i}", body) for i, body in enumerate(bodies)]
    file = client.files.with_raw_response.create(
        file=("requests.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch"
    )
    uploaded = file.parse()
    assert (uploaded.object, uploaded.purpose, uploaded.filename) == (
        "file",
        "batch",
        "requests.jsonl",
    )
    assert uploaded.bytes == len("\n".join(lines).encode())
    assert client.files.retrieve(uploaded.id).id == uploaded.id

    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"job": "test"},
    )
    assert created.status == "validating"
    assert created.expires_at == created.created_at + 24 * 3600
    done = wait_for(client, created.id)

    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 7, "completed": 7, "failed": 0}
    assert done.metadata == {"job": "test"}
    assert done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    outputs = {o["custom_id"]: o for o in jsonl(client, done.output_file_id)}
    assert sorted(outputs) == sorted(f"req-{i}" for i in range(7))
    for i, body in enumerate(bodies):
        # The same answer /v1/embeddings gives the same body.
        direct = httpx.post(gateway.base_url + "/v1/embeddings", json=body).json()
        result = outputs[f"req-{i}"]
        assert result["error"] is None
        assert result["response"]["status_code"] == 200
        assert result["response"]["body"] == direct
    tokens = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in outputs.values())
    assert tokens > 0
    assert done.usage is not None
    assert done.usage.model_dump() == {
        "input_tokens": tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens,
    }
    assert [b.id for b in client.batches.list()] == [created.id]
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    assert {f.id for f in client.files.list()} == {uploaded.id, output.id}
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_bad_lines_go_to_the_error_file_and_the_rest_completes(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    lines = [
        line("ok", {"model": "fake", "input": "fine"}),
        "{not json",
        line("unknown-model", {"model": "nope", "input": "a"}),
        line("too-long", {"model": "fake", "input": "word " * 600}),
        line("wrong-url", {"model": "fake", "input": "a"}, url="/v1/chat/completions"),
        json.dumps({"method": "POST", "url": "/v1/embeddings", "body": {}}),
        line("ok-2", {"model": "fake", "input": "also fine"}),
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait_for(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 7, "completed": 2, "failed": 5}
    outputs = jsonl(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == ["ok", "ok-2"]
    # Only answered requests count ("fine" and "also fine": 3 and 4 fake tokens).
    assert done.usage is not None and done.usage.input_tokens == 7 == done.usage.total_tokens
    errors = {e["custom_id"] or e["error"]["code"]: e for e in jsonl(client, done.error_file_id)}
    assert set(errors) == {
        "invalid_json",
        "unknown-model",
        "too-long",
        "wrong-url",
        "missing_custom_id",
    }
    assert errors["invalid_json"]["response"] is None
    assert "line 2 is not valid JSON" in errors["invalid_json"]["error"]["message"]
    assert errors["wrong-url"]["error"]["code"] == "invalid_url"
    unknown = errors["unknown-model"]
    assert unknown["error"] is None
    assert unknown["response"]["status_code"] == 404
    assert unknown["response"]["body"]["error"]["code"] == "model_not_found"
    too_long = errors["too-long"]["response"]
    assert too_long["status_code"] == 400
    assert "tokens" in too_long["body"]["error"]["message"]


def test_a_rerank_batch_uses_the_rerank_route(gateway: Gateway, client: openai.OpenAI) -> None:
    body = {"model": "fake-ranker", "query": "red fox", "documents": ["a red fox", "blue"]}
    batch = client.batches.create(
        input_file_id=upload(client, [line("r", body, url="/v1/rerank")]),
        endpoint="/v1/rerank",  # type: ignore[arg-type]  # the gateway's extension
        completion_window="24h",
    )
    done = wait_for(client, batch.id)
    [result] = jsonl(client, done.output_file_id)
    direct = httpx.post(gateway.base_url + "/v1/rerank", json=body).json()
    got = result["response"]["body"]
    assert [r["index"] for r in got["results"]] == [r["index"] for r in direct["results"]] == [0, 1]
    assert got["results"] == direct["results"]
    assert done.usage is not None
    assert done.usage.input_tokens == direct["usage"]["prompt_tokens"] > 0


def test_cancel_stops_the_batch_and_keeps_what_finished(tmp_path: Path) -> None:
    stack = contextlib.ExitStack()
    gateway = start_gateway(
        tmp_path,
        fake_models={"fake": {"latency_s": 0.1}},
        args=["--batch-dir", str(tmp_path / "batches")],
    )
    try:
        client = stack.enter_context(client_of(gateway))
        lines = [line(f"r{i}", {"model": "fake", "input": f"t{i}"}) for i in range(200)]
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
        )
        wait_for(client, batch.id, lambda b: b.request_counts.completed >= 5)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        assert cancelling.cancelling_at is not None
        done = wait_for(client, batch.id)
        stats = gateway.stats("fake")
        # Reported cancelled only once nothing is in flight: every call completed or aborted.
        assert stats["calls"] == stats["completed"] + stats["aborted"]
        time.sleep(0.5)
        assert gateway.stats("fake") == stats  # and nothing runs after it
        assert done.status == "cancelled" and done.cancelled_at is not None
        finished = done.request_counts.completed
        assert 5 <= finished < 200
        assert len(jsonl(client, done.output_file_id)) == finished
        with pytest.raises(openai.BadRequestError):
            client.batches.cancel(wait_for(client, _completed_batch(client)).id)
    finally:
        stack.close()
        gateway.stop()


def _completed_batch(client: openai.OpenAI) -> str:
    lines = [line("one", {"model": "fake", "input": "x"})]
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    ).id


def test_a_crash_mid_batch_resumes_without_redoing_finished_lines(tmp_path: Path) -> None:
    data = tmp_path / "batches"
    args = ["--batch-dir", str(data)]
    first = start_gateway(tmp_path / "first", fake_models={"fake": {"latency_s": 0.05}}, args=args)
    total = 120
    lines = [line(f"r{i}", {"model": "fake", "input": f"text {i}"}) for i in range(total)]
    try:
        with client_of(first) as client:
            batch = client.batches.create(
                input_file_id=upload(client, lines),
                endpoint="/v1/embeddings",
                completion_window="24h",
            )
            wait_for(client, batch.id, lambda b: b.request_counts.completed >= 20)
        first.process.send_signal(signal.SIGKILL)  # a crash: no drain, no lease released
        first.process.wait(10)
    finally:
        first.stop()
    recorded, status = batch_progress(data, batch.id)
    assert status == "in_progress" and 20 <= recorded < total

    second = start_gateway(
        tmp_path / "second", fake_models={"fake": {"latency_s": 0.05}}, args=args
    )
    try:
        with client_of(second) as client:
            done = wait_for(client, batch.id, timeout_s=60)  # after the crashed owner's lease
            outputs = jsonl(client, done.output_file_id)
        assert done.status == "completed"
        assert done.request_counts.model_dump() == {"total": total, "completed": total, "failed": 0}
        assert sorted(o["custom_id"] for o in outputs) == sorted(f"r{i}" for i in range(total))
        # Only the lines not recorded before the crash ran again.
        assert second.stats("fake")["completed"] == total - recorded
    finally:
        second.stop()
