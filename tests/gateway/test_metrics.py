"""GET /metrics after real requests: names, labels and counts; the timing headers."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from adapters.base import EngineFailure
from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.config import Settings
from gateway.metrics import MULTIPROC_ENV, prepare_multiprocess
from gateway.serving.cache import CachingEngine, EmbeddingCache
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import serving, wait_ready
from tests.gateway.conftest import running as serving_app

TIMING_HEADERS = ("x-queue-time", "x-tokenization-time", "x-inference-time", "x-total-time")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def test_requests_are_counted_by_route_template_model_and_status() -> None:
    engines = {"fake": FakeEngine(scores_pairs=False)}
    with serving(**engines) as client:
        for _ in range(2):
            assert (
                client.post(
                    "/v1/embeddings", json={"model": "fake", "input": ["a b", "c"]}
                ).status_code
                == 200
            )
        assert (
            client.post(
                "/rerank", json={"model": "fake", "query": "a", "documents": ["a b", "c", "d"]}
            ).status_code
            == 200
        )
        assert client.get("/no/such/path/123").status_code == 404
        assert (
            client.post("/v1/embeddings", json={"model": "nope", "input": "a"}).status_code == 404
        )
        scrape = samples(client.get("/metrics").text)

    total = "embedding_gateway_requests_total"
    assert value(scrape, total, route="/v1/embeddings", model="fake", status="200") == 2
    assert value(scrape, total, route="/rerank", model="fake", status="200") == 1
    # An unknown path is never a label value; neither is an unknown model name.
    assert value(scrape, total, route="unmatched", model="", status="404") == 1
    assert value(scrape, total, route="/v1/embeddings", model="", status="404") == 1
    assert not [key for key in scrape if ("route", "/no/such/path/123") in key[1]]
    assert not [key for key in scrape if ("model", "nope") in key[1]]
    assert value(scrape, "embedding_gateway_inputs_total", model="fake") == 4
    assert value(scrape, "embedding_gateway_rerank_documents_total", model="fake") == 3
    # Fake tokens: whitespace words plus two specials; the rerank embeds query + 3 documents.
    assert (
        value(scrape, "embedding_gateway_tokens_total", model="fake") == 2 * (4 + 3) + 3 + 4 + 3 + 3
    )
    count = "embedding_gateway_request_duration_seconds_count"
    assert value(scrape, count, route="/v1/embeddings", model="fake") == 2
    for phase in ("queue", "tokenization", "inference"):
        assert value(scrape, f"embedding_gateway_{phase}_duration_seconds_count", model="fake") == 3
    assert value(scrape, "embedding_gateway_engine_state", model="fake", state="ready") == 1
    assert value(scrape, "embedding_gateway_engine_state", model="fake", state="loading") == 0
    assert (
        value(scrape, "embedding_gateway_build_info", version="0.1.0", vllm_version="", device="")
        == 1
    )


def test_requests_refused_before_routing_carry_the_route_template() -> None:
    with serving(Settings(api_keys=("k",))) as client:
        assert client.post("/v1/embeddings", json={}).status_code == 401
        scrape = samples(client.get("/metrics", headers={"Authorization": "Bearer k"}).text)
    assert (
        value(
            scrape,
            "embedding_gateway_requests_total",
            route="/v1/embeddings",
            model="",
            status="401",
        )
        == 1
    )


def test_timing_headers_are_present_and_add_up() -> None:
    engine = FakeEngine(latency_s=0.05)
    with serving(fake=engine) as client:
        response = client.post("/v1/embeddings", json={"model": "fake", "input": ["a", "b"]})
        assert response.status_code == 200
        times = {name: int(response.headers[name]) for name in TIMING_HEADERS}
        assert times["x-inference-time"] >= 50  # the engine's 50 ms
        assert times["x-total-time"] >= (
            times["x-queue-time"] + times["x-tokenization-time"] + times["x-inference-time"]
        )
        rerank = client.post(
            "/v1/rerank", json={"model": "fake", "query": "a", "documents": ["a", "b"]}
        )
        assert all(name in rerank.headers for name in TIMING_HEADERS)
        # No engine work, no timing headers (TEI sends them on inference routes only), and
        # none on a failed engine call either.
        assert not any(name in client.get("/v1/models").headers for name in TIMING_HEADERS)
        engine.fail_with = EngineFailure("boom")
        failed = client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
        assert failed.status_code == 500
        assert not any(name in failed.headers for name in TIMING_HEADERS)


def test_cache_counters_appear_when_the_cache_is_on() -> None:
    engine = CachingEngine(FakeEngine(), EmbeddingCache(max_entries=2))
    registry = ModelRegistry([ServedModel("fake", (), engine)])
    with TestClient(create_app(registry)) as client:
        wait_ready(client)
        for inputs in (["a", "b", "a"], ["a", "c"]):  # 2 misses (a deduplicated); hit, miss
            assert (
                client.post("/v1/embeddings", json={"model": "fake", "input": inputs}).status_code
                == 200
            )
        scrape = samples(client.get("/metrics").text)
    assert value(scrape, "embedding_gateway_cache_misses_total", model="fake") == 3
    assert value(scrape, "embedding_gateway_cache_hits_total", model="fake") == 1
    assert value(scrape, "embedding_gateway_cache_evictions_total", model="fake") == 1
    assert value(scrape, "embedding_gateway_deduplicated_inputs_total", model="fake") == 1


def test_no_cache_counters_without_a_cache() -> None:
    with serving() as client:
        text = client.get("/metrics").text
    assert "embedding_gateway_cache_hits_total{" not in text


def running(
    settings: Settings, engine: FakeEngine
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return serving_app(ModelRegistry([ServedModel("fake", (), engine)]), settings)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_inflight_inputs_against_the_limit_and_429s(anyio_backend: str) -> None:
    async with running(Settings(max_inflight_inputs=3), FakeEngine(latency_s=0.5)) as client:
        first = asyncio.create_task(
            client.post("/v1/embeddings", json={"model": "fake", "input": ["a", "b"]})
        )
        deadline = time.monotonic() + 5  # until the first request's 2 inputs are admitted
        while (
            value(
                busy := samples((await client.get("/metrics")).text),
                "embedding_gateway_inflight_inputs",
                model="fake",
            )
            != 2
        ):
            assert time.monotonic() < deadline, "the first request was never admitted"
            await asyncio.sleep(0.005)
        refused = await client.post("/v1/embeddings", json={"model": "fake", "input": ["c", "d"]})
        assert refused.status_code == 429
        assert (await first).status_code == 200
        idle = samples((await client.get("/metrics")).text)
    assert value(busy, "embedding_gateway_inflight_inputs", model="fake") == 2
    assert value(busy, "embedding_gateway_admission_limit_inputs", model="fake") == 3
    assert value(idle, "embedding_gateway_inflight_inputs", model="fake") == 0
    assert (
        value(
            idle,
            "embedding_gateway_requests_total",
            route="/v1/embeddings",
            model="fake",
            status="429",
        )
        == 1
    )


def test_engine_state_follows_loading_and_failure() -> None:
    engine = FakeEngine(start_delay_s=0.5)
    with TestClient(create_app(ModelRegistry([ServedModel("fake", (), engine)]))) as client:
        loading = samples(client.get("/metrics").text)
        wait_ready(client)
        engine.dead = True
        assert (
            client.post("/v1/embeddings", json={"model": "fake", "input": "a"}).status_code == 503
        )
        failed = samples(client.get("/metrics").text)
    assert value(loading, "embedding_gateway_engine_state", model="fake", state="loading") == 1
    # Build info waits for the engines: only then do they know their version and device.
    assert not [key for key in loading if key[0] == "embedding_gateway_build_info"]
    assert value(failed, "embedding_gateway_engine_state", model="fake", state="restarting") == 1
    assert value(failed, "embedding_gateway_engine_state", model="fake", state="ready") == 0
    assert (
        value(
            failed,
            "embedding_gateway_requests_total",
            route="/v1/embeddings",
            model="fake",
            status="503",
        )
        == 1
    )


def test_an_operators_multiprocess_folder_is_emptied_at_start(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    prepare_multiprocess(workers=1)()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_several_workers_get_a_temporary_folder_removed_at_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert prepare_multiprocess(workers=1)() is None and MULTIPROC_ENV not in os.environ
    cleanup = prepare_multiprocess(workers=2)
    folder = Path(os.environ[MULTIPROC_ENV])
    assert folder.is_dir()
    cleanup()
    assert not folder.exists() and MULTIPROC_ENV not in os.environ


def test_restarts_follow_the_models_restart_count() -> None:
    # The registry counts restarts on ServedModel.restarts (engine healing); a counter here.
    with serving() as client:
        model = client.app.state.gateway["registry"].models[0]
        before = samples(client.get("/metrics").text)
        model.restarts = 2
        after = samples(client.get("/metrics").text)
    assert value(before, "embedding_gateway_engine_restarts_total", model="fake") in (None, 0)
    assert value(after, "embedding_gateway_engine_restarts_total", model="fake") == 2


def test_sparse_token_vector_and_label_routes_are_counted_like_the_others() -> None:
    engines = {
        "m3": FakeEngine(outputs=("dense", "sparse", "multivector")),
        "labels": FakeEngine(outputs=("classify",)),
    }
    calls = [
        ("/embed_sparse", {"model": "m3", "inputs": "a b"}),
        ("/embed_all", {"model": "m3", "inputs": "a b"}),
        ("/predict", {"model": "labels", "inputs": "a b"}),
        ("/pooling", {"model": "m3", "input": "a b", "task": "token_embed"}),
        ("/classify", {"model": "labels", "input": "a b"}),
    ]
    with serving(**engines) as client:
        for path, body in calls:
            assert client.post(path, json=body).status_code == 200, path
        scrape = samples(client.get("/metrics").text)
    total = "embedding_gateway_requests_total"
    for path, body in calls:
        assert value(scrape, total, route=path, model=body["model"], status="200") == 1, path
    # Each call reads "a b" with [CLS] and [SEP]: 4 tokens.
    assert value(scrape, "embedding_gateway_tokens_total", model="m3") == 3 * 4
    assert value(scrape, "embedding_gateway_tokens_total", model="labels") == 2 * 4
