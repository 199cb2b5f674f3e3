"""Ownership in the batch store (a database from before owners included), result files
owned by the batch's key, a batch's lines in its key's cache partition, the stored-bytes
cap, and the key's name in the access log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.batches.store import Store
from gateway.config import Settings
from gateway.serving.cache import CachingEngine, EmbeddingCache
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import serving, wait_ready
from tests.gateway.tenancy.clients import KEY_A, KEY_B, LINE, as_key, upload


def two_keys(tmp_path: Path, **options) -> Settings:
    keys = tmp_path / "keys"
    keys.write_text(f"team-a:{KEY_A}\nteam-b:{KEY_B}\n")
    return Settings(api_key_file=str(keys), batch_dir=str(tmp_path / "batches"), **options)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[TestClient]:
    with serving(two_keys(tmp_path, batch_max_stored_bytes=3 * (len(LINE) + 1))) as client:
        yield client


def test_a_batchs_result_file_belongs_to_the_key_that_made_the_batch(
    gateway: TestClient,
) -> None:
    a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
    batch = a.batches.create(
        input_file_id=upload(a), endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = completed(a, batch.id)
    assert batch.output_file_id is not None
    assert json.loads(a.files.content(batch.output_file_id).text)["custom_id"] == "1"
    with pytest.raises(openai.NotFoundError):
        b.files.content(batch.output_file_id)


def completed(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    deadline = time.monotonic() + 30
    while (batch := client.batches.retrieve(batch_id)).status != "completed":
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
    return batch


def test_a_batchs_lines_fill_and_read_only_its_keys_cache_partition(tmp_path: Path) -> None:
    engine = CachingEngine(FakeEngine(), EmbeddingCache(100))
    registry = ModelRegistry([ServedModel("fake", (), engine)])
    app = create_app(registry, two_keys(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as gateway:
        wait_ready(gateway)
        a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
        batch = a.batches.create(
            input_file_id=upload(a), endpoint="/v1/embeddings", completion_window="24h"
        )
        completed(a, batch.id)
        assert (engine.stats.hits, engine.stats.misses) == (0, 1)
        a.embeddings.create(model="fake", input="x")
        assert (engine.stats.hits, engine.stats.misses) == (1, 1)
        b.embeddings.create(model="fake", input="x")
        assert (engine.stats.hits, engine.stats.misses) == (1, 2)


def test_an_upload_past_the_keys_stored_bytes_gets_413_and_other_keys_still_upload(
    gateway: TestClient,
) -> None:
    a, b = as_key(gateway, KEY_A), as_key(gateway, KEY_B)
    for _ in range(3):
        upload(a)
    with pytest.raises(openai.APIStatusError) as refused:
        upload(a)
    assert refused.value.status_code == 413
    assert refused.value.code == "storage_limit_exceeded"
    assert len(a.files.list().data) == 3
    upload(b)


def test_the_access_log_names_the_key_and_never_shows_it(gateway: TestClient, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        as_key(gateway, KEY_A).embeddings.create(model="fake", input="x")
    (line,) = [r.getMessage() for r in caplog.records if "/v1/embeddings" in r.getMessage()]
    assert "key=team-a" in line
    assert KEY_A not in caplog.text


def test_rows_from_a_database_without_owners_are_kept_for_admins(tmp_path: Path) -> None:
    old = Store(tmp_path)
    old.db.executescript(
        """
        DROP INDEX files_by_owner; DROP INDEX batches_by_owner;
        ALTER TABLE files DROP COLUMN owner; ALTER TABLE batches DROP COLUMN owner;
        INSERT INTO files (id, filename, purpose, bytes, created_at)
        VALUES ('file-00000000000000000000000000000001', 'old.jsonl', 'batch', 5, 0);
        """
    )
    old.close()
    store = Store(tmp_path)
    file_id = "file-00000000000000000000000000000001"
    assert store.file(file_id, owner="team-a") is None
    assert store.file(file_id)["owner"] == ""
    assert store.files(after=None, limit=10, order="desc", purpose=None, owner="team-a").rows == []
    batch = store.add_batch(
        endpoint="/v1/embeddings",
        input_file_id=file_id,
        completion_window="24h",
        window_s=86400,
        metadata=None,
        output_expires_s=60,
        owner="team-a",
    )
    assert store.batch(batch["id"], owner="team-a") is not None
    assert store.batch(batch["id"], owner="team-b") is None
    store.close()


def add_batch(store: Store, key: str) -> str:
    row = store.add_batch(
        endpoint="/v1/embeddings",
        input_file_id="file-00000000000000000000000000000001",
        completion_window="24h",
        window_s=86400,
        metadata=None,
        output_expires_s=60,
        owner=key,
    )
    return str(row["id"])


def run_next(store: Store, started_at: int) -> str:
    """Claim the next batch and finish it, as the runner does."""
    row = store.claim("runner", 10.0)
    assert row is not None
    store.set_status(row["id"], "in_progress", in_progress_at=started_at)
    store.set_status(row["id"], "completed")
    return str(row["id"])


def test_keys_take_turns_in_the_batch_queue(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a1, a2, a3 = (add_batch(store, "team-a") for _ in range(3))
    b1, b2 = (add_batch(store, "team-b") for _ in range(2))
    assert [run_next(store, t) for t in range(1, 6)] == [a1, b1, a2, b2, a3]
    store.close()


def test_a_cancellation_is_picked_before_waiting_batches(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_batch(store, "team-a")
    cancelled = add_batch(store, "team-b")
    assert store.request_cancel(cancelled)
    assert store.claim("runner", 10.0)["id"] == cancelled
    store.close()
