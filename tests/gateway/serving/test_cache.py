"""De-duplication within a request and the optional LRU embedding cache."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.base import EmbedOptions, InvalidInput
from adapters.fake import FakeEngine, fake_vector
from gateway.app import create_app
from gateway.serving.cache import CachingEngine, EmbeddingCache
from gateway.serving.registry import ModelRegistry, ServedModel
from gateway.tenancy import ANONYMOUS, Tenant, current_tenant
from tests.conftest import wait_ready


@pytest.fixture(autouse=True)
def caller():
    """Calls made as one caller, as requests are (the cache is partitioned by caller)."""
    token = current_tenant.set(ANONYMOUS)
    yield
    current_tenant.reset(token)


def started(engine: FakeEngine) -> FakeEngine:
    asyncio.run(engine.start())
    return engine


def test_repeated_inputs_reach_the_engine_once_and_come_back_in_order() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake)
    batch = asyncio.run(engine.embed(["a", "b b", "a", "c", "b b"]))
    assert fake.calls == [["a", "b b", "c"]]
    expected = np.stack([fake_vector(t, 8) for t in ["a", "b b", "a", "c", "b b"]])
    np.testing.assert_array_equal(batch.vectors, expected)
    # Every input is charged its tokens, repeats included.
    assert list(batch.token_counts) == [3, 4, 3, 3, 4]
    assert engine.stats.deduplicated == 2


def test_distinct_inputs_without_cache_pass_through_untouched() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake)
    asyncio.run(engine.embed(["x", "y"]))
    assert fake.calls == [["x", "y"]]
    assert engine.stats.deduplicated == 0


def test_cache_answers_repeats_across_requests_and_counts_them() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake, EmbeddingCache(max_entries=10))
    first = asyncio.run(engine.embed(["a", "b"]))
    second = asyncio.run(engine.embed(["b", "c", "a"]))
    assert fake.calls == [["a", "b"], ["c"]]
    np.testing.assert_array_equal(second.vectors[0], first.vectors[1])
    np.testing.assert_array_equal(second.vectors[2], first.vectors[0])
    np.testing.assert_array_equal(second.vectors[1], fake_vector("c", 8))
    assert list(second.token_counts) == [3, 3, 3]
    assert (engine.stats.hits, engine.stats.misses) == (2, 3)


def embed_as(engine: CachingEngine, tenant: Tenant | None, texts: list[str]) -> None:
    token = current_tenant.set(tenant)
    try:
        asyncio.run(engine.embed(texts))
    finally:
        current_tenant.reset(token)


def test_one_key_is_never_answered_from_another_keys_cached_inputs() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake, EmbeddingCache(max_entries=10))
    embed_as(engine, Tenant("team-a"), ["secret"])
    embed_as(engine, Tenant("team-b"), ["secret"])
    embed_as(engine, Tenant("team-a"), ["secret"])
    assert fake.calls == [["secret"], ["secret"]]
    assert (engine.stats.hits, engine.stats.misses) == (1, 2)


def test_calls_without_a_caller_skip_the_cache_but_still_deduplicate() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake, EmbeddingCache(max_entries=10))
    embed_as(engine, Tenant("team-a"), ["a"])
    embed_as(engine, None, ["a", "a"])
    assert fake.calls == [["a"], ["a"]]
    assert len(engine.cache or []) == 1


def test_cache_evicts_the_least_recently_used_entry() -> None:
    fake = started(FakeEngine(dimension=8))
    cache = EmbeddingCache(max_entries=2)
    engine = CachingEngine(fake, cache)
    asyncio.run(engine.embed(["a", "b"]))
    asyncio.run(engine.embed(["a"]))  # a is now more recent than b
    asyncio.run(engine.embed(["c"]))  # evicts b
    asyncio.run(engine.embed(["a", "b"]))
    assert fake.calls == [["a", "b"], ["c"], ["b"]]
    assert len(cache) == 2
    assert cache.stats.evictions == 2


def test_cache_key_includes_the_engine_options() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake, EmbeddingCache(max_entries=10))
    asyncio.run(engine.embed(["a"], EmbedOptions(truncate="end")))
    asyncio.run(engine.embed(["a"], EmbedOptions()))
    asyncio.run(engine.embed(["a"], EmbedOptions(truncate="end")))
    assert fake.options == [EmbedOptions(truncate="end"), EmbedOptions()]


def test_token_id_prompts_are_deduplicated_by_their_ids() -> None:
    fake = started(FakeEngine(dimension=8))
    engine = CachingEngine(fake)
    batch = asyncio.run(engine.embed([[5, 6], "5 6", [5, 6], [7]]))
    assert fake.calls == [[[5, 6], "5 6", [7]]]
    np.testing.assert_array_equal(batch.vectors[0], batch.vectors[2])
    assert list(batch.token_counts) == [2, 4, 2, 1]


def test_truncated_indices_point_at_every_repeat() -> None:
    fake = started(FakeEngine(dimension=8, max_model_len=4))
    engine = CachingEngine(fake, EmbeddingCache(max_entries=10))
    long = "one two three four five"
    batch = asyncio.run(engine.embed(["a", long, long], EmbedOptions(truncate="end")))
    assert batch.truncated == (1, 2)
    again = asyncio.run(engine.embed([long, "a"], EmbedOptions(truncate="end")))
    assert again.truncated == (0,)
    assert list(again.token_counts) == [4, 3]
    assert len(fake.calls) == 1


def test_a_failing_input_is_named_by_its_index_in_the_request() -> None:
    fake = started(FakeEngine(dimension=8, max_model_len=4))
    engine = CachingEngine(fake)
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(engine.embed(["a", "a", "one two three four five"]))
    assert caught.value.index == 2
    assert "input 2 has 7 tokens" in caught.value.message


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EmbeddingCache(max_entries=0)


def test_wrapper_delegates_the_rest_of_the_engine() -> None:
    fake = FakeEngine(dimension=8)
    engine = CachingEngine(fake)
    asyncio.run(engine.start())
    assert fake.started
    assert engine.facts.dimension == 8
    assert engine.spec is fake.spec
    asyncio.run(engine.shutdown())
    assert fake.stopped


def test_http_response_with_repeated_inputs_keeps_order_and_usage() -> None:
    fake = FakeEngine(dimension=8)
    registry = ModelRegistry([ServedModel("fake", (), CachingEngine(fake))])
    with TestClient(create_app(registry)) as client:
        wait_ready(client)
        response = client.post("/v1/embeddings", json={"model": "fake", "input": ["x", "y", "x"]})
    assert response.status_code == 200
    body = response.json()
    rows = [np.array(d["embedding"], dtype=np.float32) for d in body["data"]]
    np.testing.assert_array_equal(rows[0], rows[2])
    np.testing.assert_array_equal(rows[1], fake_vector("y", 8))
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert fake.calls == [["x", "y"]]


def test_the_wrapper_is_an_engine_with_every_method_of_its_own() -> None:
    from adapters.base import Engine

    wrapped = CachingEngine(FakeEngine())
    assert isinstance(wrapped, Engine)
    for name in ("start", "embed", "score", "split", "check_health", "shutdown"):
        # defined on the wrapper itself, not the protocol's empty default or a __getattr__
        assert name in vars(CachingEngine), name


def test_the_cache_is_bounded_by_bytes_as_well_as_entries() -> None:
    fake = started(FakeEngine(dimension=8, max_model_len=200_000))
    cache = EmbeddingCache(max_entries=1000, max_bytes=64 * 1024)
    engine = CachingEngine(fake, cache)
    long_texts = [f"{i} " + "word " * 2000 for i in range(20)]  # ~10 KB each
    for text in long_texts:
        asyncio.run(engine.embed([text]))
    assert cache.bytes <= 64 * 1024
    assert 3 <= len(cache) < 20 and cache.stats.evictions == 20 - len(cache)
    # The most recent inputs are kept, the oldest went first.
    asyncio.run(engine.embed([long_texts[-1]]))
    assert cache.stats.hits == 1
    huge = "x " * 100_000  # bigger than the whole budget: answered, never kept
    asyncio.run(engine.embed([huge]))
    assert cache.bytes <= 64 * 1024 and cache.get((huge, EmbedOptions())) is None


def test_cache_bytes_option() -> None:
    from gateway.config import load_settings

    assert load_settings({}, {}).embedding_cache_bytes == 256 * 2**20
    assert (
        load_settings({}, {"GATEWAY_EMBEDDING_CACHE_BYTES": "1000"}).embedding_cache_bytes == 1000
    )
