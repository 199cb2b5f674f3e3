"""A gateway process on the fake engine, started and steered the way the battery and the
process tests do it; both load loops driven against it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import httpx
import orjson
import pytest

from harness.gateway import Gateway, start_gateway
from harness.load import Body, closed_loop, embeddings_body, open_loop
from harness.raw_http import raw_status


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("gateway"), fake_models={"m": {}})
    yield gateway
    assert gateway.stop() == 0


def test_it_is_ready_once_started(gateway: Gateway) -> None:
    assert gateway.ready_history[-1] == 200
    assert httpx.get(gateway.base_url + "/ready").status_code == 200
    assert gateway.openai_base_url == gateway.base_url + "/v1"


def test_a_fake_model_is_steered_through_its_control_file(gateway: Gateway) -> None:
    gateway.control("m", fail=True)
    try:
        failed = httpx.post(gateway.base_url + "/v1/embeddings", json={"model": "m", "input": "a"})
    finally:
        gateway.control("m", fail=False)
    assert failed.status_code >= 500
    answered = httpx.post(gateway.base_url + "/v1/embeddings", json={"model": "m", "input": "a"})
    assert answered.status_code == 200


def test_raw_status_sends_the_request_line_verbatim(gateway: Gateway) -> None:
    assert raw_status(gateway.port, "GET /health HTTP/1.1") == 200
    assert raw_status(gateway.port, "GET /no-such-route HTTP/1.1") == 404


def test_the_closed_loop_counts_every_answer(gateway: Gateway) -> None:
    data = orjson.dumps({"model": "m", "input": ["one two", "three"]})
    result = asyncio.run(
        closed_loop(
            gateway.base_url + "/v1/embeddings",
            [Body(data, texts=2, tokens=3)],
            concurrency=2,
            duration_s=0.5,
        )
    )
    assert result.requests > 0 and result.errors == 0
    assert result.texts == 2 * result.requests and result.tokens == 3 * result.requests
    assert 0 < result.p50_ms <= result.p99_ms


def test_the_open_loop_sends_on_schedule(gateway: Gateway) -> None:
    rng = random.Random(0)
    run = asyncio.run(open_loop(gateway.base_url, 20, 1.0, lambda _: embeddings_body("m", rng)))
    assert len(run.outcomes) == 20
    assert run.statuses() == {200: 20}
    assert all(o.latency_s > 0 for o in run.outcomes)
    assert run.latencies() == sorted(o.latency_s for o in run.outcomes)
