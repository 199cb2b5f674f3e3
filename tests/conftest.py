"""Shared fixtures: the fake-engine app for unit tests."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
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
