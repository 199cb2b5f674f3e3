"""Fixtures shared by the gateway's unit tests: an app with small limits, an app served with
real concurrency, and the check of an error answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.config import Settings
from gateway.serving.registry import ModelRegistry
from tests.conftest import serving

JSON = {"content-type": "application/json"}


@pytest.fixture
def small() -> Iterator[TestClient]:
    """A ready app with a 1000-byte body cap, 4 inputs and 10 tokens per request."""
    settings = Settings(max_body_bytes=1000, max_inputs=4, max_request_tokens=10)
    with serving(settings, fake=FakeEngine(max_model_len=512)) as client:
        yield client


def assert_error(response, status: int, fragment: str) -> None:
    """`status`, the OpenAI envelope, and `fragment` in its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]


@contextlib.asynccontextmanager
async def running(
    registry: ModelRegistry, settings: Settings, ready_within_s: float = 10.0
) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGI to an app in its own lifespan (real concurrency, the app's watchdog),
    once /ready says 200; `client.app` is the app."""
    app = create_app(registry, settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope, receive, send):
            # As a server does: each request gets a copy of the lifespan state.
            await app({**scope, "state": dict(state)}, receive, send)

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=with_state), base_url="http://gateway"
        ) as client:
            deadline = time.monotonic() + ready_within_s  # a start that keeps failing must not hang
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.01)
            client.app = app  # type: ignore[attr-defined]
            yield client
