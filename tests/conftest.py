"""Shared fixtures: the fake-engine app for unit tests."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.batches.store import Store
from gateway.config import InputPolicy, Settings
from gateway.serving.registry import ModelRegistry, ServedModel
from harness.paths import REPO

# tiktoken's cl100k_base file, offline, beside the clone (CI's .ci/run exports the same). Client
# libraries in the test process (LangChain) tokenize with it; the gateway decodes with it.
TIKTOKEN_DIR = os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken"))
# Batch API state of every app and gateway process the tests start (tests that look at it
# pass their own folder): never the user's own data folder.
os.environ.setdefault("GATEWAY_BATCH_DIR", tempfile.mkdtemp(prefix="gateway-test-batches-"))


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
    with TestClient(
        create_app(registry, tiktoken_dir=TIKTOKEN_DIR), raise_server_exceptions=False
    ) as test_client:
        wait_ready(test_client)
        yield test_client


def make_client(
    engine: FakeEngine, policy: InputPolicy | None = None, tiktoken_dir: str | None = TIKTOKEN_DIR
) -> TestClient:
    """A TestClient (use it in `with`) over one fake model `fake` with the given input policy."""
    registry = ModelRegistry([ServedModel("fake", (), engine, policy or InputPolicy())])
    return TestClient(
        create_app(registry, tiktoken_dir=tiktoken_dir), raise_server_exceptions=False
    )


@contextlib.contextmanager
def serving(settings: Settings | None = None, **engines: FakeEngine) -> Iterator[TestClient]:
    """A ready TestClient over fake engines, one model per keyword (default: `fake`)."""
    engines = engines or {"fake": FakeEngine()}
    registry = ModelRegistry([ServedModel(name, (), engine) for name, engine in engines.items()])
    with TestClient(create_app(registry, settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def batch_progress(batch_dir: Path, batch_id: str) -> tuple[int, str]:
    """(lines recorded, status) of a batch in a gateway's batch folder, read as a restarted
    gateway reads it: what a crash left behind."""
    store = Store(batch_dir)
    try:
        row = store.existing_batch(batch_id)
        return row["completed"], row["status"]
    finally:
        store.db.close()
