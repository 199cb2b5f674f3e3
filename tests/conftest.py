"""Shared fixtures: the fake-engine app for unit tests."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.config import Settings
from gateway.registry import ModelRegistry, ServedModel


def wait_ready(client: TestClient, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("the app never became ready")
        time.sleep(0.01)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(dimension=8, max_model_len=16)


@pytest.fixture
def client(fake_engine: FakeEngine) -> Iterator[TestClient]:
    """A ready app serving one fake model named `fake` (alias `fake-alias`)."""
    registry = ModelRegistry([ServedModel("fake", ("fake-alias",), fake_engine)])
    with TestClient(create_app(registry), raise_server_exceptions=False) as test_client:
        wait_ready(test_client)
        yield test_client


@contextlib.contextmanager
def serving(settings: Settings | None = None, **engines: FakeEngine) -> Iterator[TestClient]:
    """A ready TestClient over fake engines, one model per keyword (default: `fake`)."""
    engines = engines or {"fake": FakeEngine()}
    registry = ModelRegistry([ServedModel(name, (), engine) for name, engine in engines.items()])
    with TestClient(create_app(registry, settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client
