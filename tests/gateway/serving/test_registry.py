"""Engines heal: a dead or hung engine is restarted in-process with backoff while the other
models keep serving; after N starts that do not hold the model is down and /health says 503.
Fake engines, the app's own lifespan and watchdog, httpx over ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.base import EngineUnavailable, StepReporter, no_report
from adapters.fake import FakeEngine
from gateway.config import Settings
from gateway.serving.registry import EngineState, ModelRegistry, RestartPolicy, ServedModel
from tests.gateway.conftest import running as serving_app

pytestmark = pytest.mark.anyio
FAST = Settings(health_check_interval_s=0.05, health_check_timeout_s=0.3)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingEngine(FakeEngine):
    """A fake that records when each start was attempted."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start_times: list[float] = []

    async def start(self, report: StepReporter = no_report) -> None:
        self.start_times.append(time.monotonic())
        await super().start(report)


@contextlib.asynccontextmanager
async def running(
    policy: RestartPolicy, **engines: FakeEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, ModelRegistry]]:
    registry = ModelRegistry([ServedModel(n, (), e) for n, e in engines.items()], policy)
    async with serving_app(registry, FAST) as client:
        yield client, registry


def embed(client: httpx.AsyncClient, model: str):
    return client.post("/v1/embeddings", json={"model": model, "input": ["a"]})


async def until(predicate, timeout_s: float = 5.0) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_dead_engine_is_restarted_and_serves_again_while_others_keep_serving() -> None:
    doomed, other = CountingEngine(latency_s=0.01), FakeEngine(latency_s=0.01)
    async with running(RestartPolicy(backoff_s=0.5), doomed=doomed, other=other) as (
        client,
        registry,
    ):
        model = registry.models[0]
        doomed.dead = True
        await until(lambda: model.state is EngineState.RESTARTING)
        refused = await embed(client, "doomed")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
        assert "restarting" in refused.json()["error"]["message"]
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"doomed": "restarting", "other": "ready"}
        assert (await client.get("/health")).status_code == 200  # it can recover
        assert (await embed(client, "other")).status_code == 200
        await until(lambda: model.state is EngineState.READY)
        assert doomed.start_times[1] - doomed.start_times[0] >= 0.5  # the backoff
        assert model.restarts == 1 and doomed.stopped is False
        assert (await embed(client, "doomed")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_a_hung_engine_is_detected_by_its_probe_and_restarted() -> None:
    hung = CountingEngine(latency_s=0.01)
    async with running(RestartPolicy(backoff_s=0.1), hung=hung) as (client, registry):
        model = registry.models[0]
        hung.hang = True
        stuck = asyncio.create_task(embed(client, "hung"))
        detected = await until(lambda: model.state is EngineState.RESTARTING)
        assert detected < 2  # probe deadline 0.3 s + interval 0.05 s, with slack for a busy box
        assert (await stuck).status_code == 503  # the waiting request fails, not hangs
        assert hung.aborted == 1
        await until(lambda: model.state is EngineState.READY)
        assert len(hung.start_times) == 2 and model.restarts == 1
        assert (await embed(client, "hung")).status_code == 200


async def test_backoff_doubles_and_after_n_tries_the_model_is_down_and_health_is_503() -> None:
    doomed, other = CountingEngine(), FakeEngine()
    policy = RestartPolicy(attempts=3, backoff_s=0.1)
    async with running(policy, doomed=doomed, other=other) as (client, registry):
        model = registry.models[0]
        doomed.fail_start = True
        doomed.dead = True
        await until(lambda: model.state is EngineState.DOWN)
        gaps = [b - a for a, b in zip(doomed.start_times[1:], doomed.start_times[2:])]
        assert len(doomed.start_times) == 1 + 3
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 0.1, 0.2, 0.4
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "down", "models": ["doomed"]}
        ready = await client.get("/ready")
        assert ready.json()["models"] == {"doomed": "down", "other": "ready"}
        refused = await embed(client, "doomed")
        assert refused.status_code == 503 and "retry-after" in refused.headers
        assert (await embed(client, "other")).status_code == 200


async def test_tries_start_over_once_a_restart_has_held() -> None:
    engine = CountingEngine()
    policy = RestartPolicy(attempts=1, backoff_s=0.05, stable_s=0.3)
    async with running(policy, flaky=engine) as (client, registry):
        model = registry.models[0]
        for _ in range(3):  # one try each time: each restart held long enough
            await asyncio.sleep(0.35)
            engine.dead = True
            await until(lambda: model.state is EngineState.RESTARTING)
            await until(lambda: model.state is EngineState.READY)
        assert model.restarts == 3
        engine.dead = True  # dies again at once: the last start did not hold, and 1 try it was
        await until(lambda: model.state is EngineState.DOWN)
        assert len(engine.start_times) == 1 + 3
        assert (await client.get("/health")).status_code == 503


async def test_engine_errors_never_show_server_paths_to_clients(caplog) -> None:
    engine = FakeEngine()
    async with running(RestartPolicy(), fake=engine) as (client, _registry):
        engine.fail_with = EngineUnavailable(
            "cannot open /srv/models/secret-model/tokenizer.json: gone"
        )
        response = await embed(client, "fake")
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "/srv/models" not in message and "secret-model" not in message
        assert message == "cannot open <path>: gone"
    assert "/srv/models/secret-model/tokenizer.json" in caplog.text  # kept in the log
