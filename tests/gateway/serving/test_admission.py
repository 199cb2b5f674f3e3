"""Bounded admission, request timeouts, client disconnects and engine faults, over the fake
engine with real concurrency (httpx over ASGI, the app's own lifespan)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager

import httpx
import orjson
import pytest

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.config import Settings
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.gateway.conftest import running as serving_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def running(
    settings: Settings, **engines: FakeEngine
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    registry = ModelRegistry([ServedModel(name, (), e) for name, e in engines.items()])
    return serving_app(registry, settings)


def embed(client: httpx.AsyncClient, model: str = "fake", n: int = 1):
    return client.post("/v1/embeddings", json={"model": model, "input": ["a"] * n})


async def test_past_the_bound_requests_get_429_at_once() -> None:
    engine = FakeEngine(latency_s=0.3)
    async with running(Settings(max_inflight_inputs=10), fake=engine) as client:
        big = asyncio.create_task(embed(client, n=8))
        await asyncio.sleep(0.05)
        fits = asyncio.create_task(embed(client, n=2))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        refused = await embed(client, n=1)
        waited = time.perf_counter() - started
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert waited < 0.1  # refused at once, not queued behind the work in flight
        assert (await big).status_code == (await fits).status_code == 200
        assert (await embed(client, n=10)).status_code == 200  # capacity came back
        assert client.app.state.gateway["admission"].inflight == 0


async def test_a_request_bigger_than_the_bound_runs_alone() -> None:
    async with running(Settings(max_inflight_inputs=2, max_inputs=5), fake=FakeEngine()) as client:
        assert (await embed(client, n=5)).status_code == 200


async def test_timeout_is_504_and_aborts_the_engine_work() -> None:
    engine = FakeEngine(latency_s=5)
    async with running(Settings(request_timeout_s=0.2), fake=engine) as client:
        started = time.perf_counter()
        response = await embed(client)
        assert response.status_code == 504
        assert time.perf_counter() - started < 1
        assert response.json()["error"]["code"] == "timeout"
        assert engine.aborted == 1
        assert client.app.state.gateway["admission"].inflight == 0


async def test_client_disconnect_aborts_the_engine_work() -> None:
    engine = FakeEngine(latency_s=5)
    app = create_app(ModelRegistry([ServedModel("fake", (), engine)]), Settings())
    body = orjson.dumps({"model": "fake", "input": ["a", "b"]})
    sent: list[dict] = []

    async def receive():
        if not sent:
            sent.append({"type": "http.request"})
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.1)  # the client hangs up while the engine works
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "headers": [(b"content-type", b"application/json")],
        "client": ("t", 1),
        "server": ("gateway", 80),
    }
    async with app.router.lifespan_context(app) as state:
        scope["state"] = dict(state)  # as the server hands each request the lifespan state
        while app.state.gateway["registry"].models[0].state.value != "ready":
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.wait_for(app(scope, receive, send), 2)
        assert time.perf_counter() - started < 1
    assert engine.aborted == 1
    assert app.state.gateway["admission"].counters.disconnects == 1
    assert app.state.gateway["admission"].inflight == 0


async def test_engine_death_fails_in_flight_fast_and_spares_other_models() -> None:
    doomed, healthy = FakeEngine(latency_s=5), FakeEngine(latency_s=0.01)
    async with running(Settings(), doomed=doomed, healthy=healthy) as client:
        in_flight = [asyncio.create_task(embed(client, "doomed")) for _ in range(5)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        doomed.dead = True
        responses = await asyncio.gather(*in_flight)
        assert time.perf_counter() - started < 0.5
        assert {r.status_code for r in responses} == {503}
        assert "stopped" in responses[0].json()["error"]["message"]
        assert (await embed(client, "doomed")).status_code == 503
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"doomed": "restarting", "healthy": "ready"}
        assert (await embed(client, "healthy")).status_code == 200


async def test_hung_engine_is_taken_out_of_service_by_the_watchdog() -> None:
    hung, healthy = FakeEngine(latency_s=0.01), FakeEngine(latency_s=0.01)
    settings = Settings(health_check_interval_s=0.05, health_check_timeout_s=0.2)
    async with running(settings, hung=hung, healthy=healthy) as client:
        hung.hang = True
        in_flight = [asyncio.create_task(embed(client, "hung")) for _ in range(3)]
        started = time.perf_counter()
        responses = await asyncio.gather(*in_flight)
        assert time.perf_counter() - started < 1
        assert {r.status_code for r in responses} == {503}
        assert "hung" in responses[0].json()["error"]["message"]
        assert hung.aborted == 3  # the engine calls were cancelled, not left running
        refused = await embed(client, "hung")
        assert refused.status_code == 503 and "retry-after" in refused.headers
        ready = await asyncio.wait_for(client.get("/ready"), 2)
        assert ready.status_code == 503
        assert (await embed(client, "healthy")).status_code == 200


async def test_ready_answers_quickly_even_when_an_engine_hangs() -> None:
    hung = FakeEngine()
    settings = Settings(health_check_interval_s=0.2, health_check_timeout_s=30)
    async with running(settings, hung=hung) as client:
        hung.hang = True
        await asyncio.sleep(1.5)  # the watchdog's probe has waited over a second by now
        started = time.perf_counter()
        ready = await client.get("/ready")
        assert time.perf_counter() - started < 0.5
        assert ready.status_code == 503
        assert ready.json()["models"] == {"hung": "unresponsive"}


async def test_nan_input_is_500_and_concurrent_requests_are_unaffected() -> None:
    engine = FakeEngine(latency_s=0.05, nan_marker="POISON")
    async with running(Settings(), fake=engine) as client:
        poison = client.post("/v1/embeddings", json={"model": "fake", "input": ["x", "POISON"]})
        results = await asyncio.gather(poison, *(embed(client) for _ in range(10)))
        assert results[0].status_code == 500
        assert "non-finite vector for input 1" in results[0].json()["error"]["message"]
        assert {r.status_code for r in results[1:]} == {200}
        assert (await client.get("/ready")).status_code == 200


async def test_the_bound_is_per_model_so_a_stuck_model_does_not_starve_others() -> None:
    stuck, other = FakeEngine(latency_s=5), FakeEngine()
    async with running(Settings(max_inflight_inputs=4), stuck=stuck, other=other) as client:
        hogs = [asyncio.create_task(embed(client, "stuck", n=4))]
        await asyncio.sleep(0.05)
        assert (await embed(client, "stuck")).status_code == 429
        assert (await embed(client, "other", n=4)).status_code == 200
        stuck.dead = True
        assert (await hogs[0]).status_code == 503


async def test_rerank_goes_through_admission_and_the_timeout() -> None:
    engine = FakeEngine(latency_s=5)
    async with running(
        Settings(max_inflight_inputs=2, request_timeout_s=0.3), fake=engine
    ) as client:
        body = {"model": "fake", "query": "q", "documents": ["a", "b"]}
        slow = asyncio.create_task(client.post("/v1/rerank", json=body))
        await asyncio.sleep(0.05)
        refused = await client.post("/v2/rerank", json=body)
        assert refused.status_code == 429
        timed_out = await slow
        assert timed_out.status_code == 504
        assert engine.aborted == 1
