"""The lifespan: engines start in the background, /ready follows them, failures are fatal."""

from __future__ import annotations

import gc
import time

from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.serving.registry import ModelRegistry, ServedModel


class BrokenEngine(FakeEngine):
    async def start(self, report=None) -> None:
        raise OSError("no such model folder")


def test_ready_is_503_while_loading_then_200() -> None:
    engine = FakeEngine(start_delay_s=0.3)
    app = create_app(ModelRegistry([ServedModel("fake", (), engine)]))
    with TestClient(app) as client:
        loading = client.get("/ready")
        assert loading.status_code == 503
        body = loading.json()
        elapsed = body["progress"]["fake"].pop("elapsed_s")
        assert body == {
            "status": "not ready",
            "models": {"fake": "loading"},
            "progress": {"fake": {"step": "loading weights"}},
        }
        assert 0 <= elapsed < 0.3
        assert client.get("/health").status_code == 200
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
        assert refused.status_code == 503
        assert "still loading" in refused.json()["error"]["message"]
        time.sleep(0.5)
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "models": {"fake": "ready"}}
    assert engine.stopped  # the lifespan shuts engines down


def test_failed_load_calls_on_fatal_and_keeps_others_serving() -> None:
    fatal_calls = []
    registry = ModelRegistry(
        [
            ServedModel("good", (), FakeEngine()),
            ServedModel("bad", (), BrokenEngine()),
        ]
    )
    app = create_app(registry, on_fatal=lambda: fatal_calls.append(True))
    with TestClient(app) as client:
        deadline = time.monotonic() + 2
        while not fatal_calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fatal_calls == [True]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"good": "ready", "bad": "down"}
        assert (
            client.post("/v1/embeddings", json={"model": "good", "input": "a"}).status_code == 200
        )
        assert client.post("/v1/embeddings", json={"model": "bad", "input": "a"}).status_code == 503


def test_a_trailing_slash_is_404_never_a_redirect_built_from_the_host_header() -> None:
    app = create_app(ModelRegistry([ServedModel("fake", (), FakeEngine())]))
    with TestClient(app, base_url="http://evil.example") as client:
        for method, path in (
            ("POST", "/v1/embeddings/"),
            ("GET", "/v1/models/"),
            ("GET", "/health/"),
        ):
            response = client.request(
                method, path, json={"model": "fake", "input": "a"}, follow_redirects=False
            )
            assert response.status_code == 404, path
            assert "location" not in response.headers
            assert "evil.example" not in response.text
            # `/v1/models/` is `GET /v1/models/{id}` with an empty id: no such model.
            assert response.json()["error"]["code"] in ("not_found", "model_not_found")


class Leftover:
    """An object start-up leaves behind, reachable from the engine (as vLLM's are)."""


def test_the_server_freezes_the_start_up_heap_once_its_engines_have_started() -> None:
    engine = FakeEngine(start_delay_s=0.3)
    engine.leftover = Leftover()  # type: ignore[attr-defined]
    app = create_app(ModelRegistry([ServedModel("fake", (), engine)]), freeze_heap=True)
    gc.unfreeze()
    try:
        with TestClient(app) as client:
            assert client.get("/ready").status_code == 503
            assert gc.get_freeze_count() == 0  # not while loading: the heap is still growing
            while client.get("/ready").status_code != 200:
                time.sleep(0.01)
            deadline = time.monotonic() + 2
            while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            # Frozen: what start-up left is out of the generations a collection walks.
            assert all(obj is not engine.leftover for obj in gc.get_objects())
    finally:
        gc.unfreeze()


def test_an_app_built_for_tests_leaves_the_heap_alone() -> None:
    gc.unfreeze()
    with TestClient(create_app(ModelRegistry([ServedModel("fake", (), FakeEngine())]))) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.01)
        assert gc.get_freeze_count() == 0
