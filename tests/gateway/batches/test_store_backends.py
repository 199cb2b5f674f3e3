"""The batch store's records, the same on SQLite and on PostgreSQL: owners see their own
files and batches, lists page by cursor, leases keep a batch to one process, and a line's
progress is recorded once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.batches.pg_store import PgStore
from gateway.batches.reading import ChunkBounds
from gateway.batches.store import STORE_ERRORS, LeaseLost, Store, new_file_id
from harness.postgres import fresh_database
from tests.gateway.batches.conftest import OpenStore


def _batch(store: Store, owner: str = "alice", file_id: str | None = None) -> str:
    row = store.add_batch(
        endpoint="/v1/embeddings",
        input_file_id=file_id or new_file_id(),
        completion_window="24h",
        window_s=3600,
        metadata={"run": owner},
        output_expires_s=3600,
        owner=owner,
    )
    return str(row["id"])


def _file(store: Store, owner: str, size: int = 10) -> str:
    file_id = new_file_id()
    store.add_file(file_id, "in.jsonl", "batch", size, None, owner)
    return file_id


def test_a_file_is_seen_by_its_owner_and_an_admin_only(open_store: OpenStore) -> None:
    store = open_store()
    file_id = _file(store, "alice")
    assert store.file(file_id, "alice") is not None
    assert store.file(file_id, "bob") is None
    assert store.file(file_id) is not None  # an admin key, or a gateway without keys


def test_lists_hold_the_owners_records_a_page_at_a_time(open_store: OpenStore) -> None:
    store = open_store()
    mine = [_file(store, "alice") for _ in range(3)]
    _file(store, "bob")
    first = store.files(after=None, limit=2, order="asc", purpose=None, owner="alice")
    assert [row["id"] for row in first.rows] == mine[:2]
    assert first.has_more
    rest = store.files(after=mine[1], limit=2, order="asc", purpose=None, owner="alice")
    assert [row["id"] for row in rest.rows] == mine[2:]
    assert not rest.has_more
    everyone = store.files(after=None, limit=10, order="desc", purpose="batch", owner=None)
    assert len(everyone.rows) == 4

    batches = [_batch(store, "alice") for _ in range(2)]
    _batch(store, "bob")
    page = store.batches(after=None, limit=10, owner="alice")
    assert [row["id"] for row in page.rows] == batches[::-1]


def test_stored_bytes_count_the_owners_files(open_store: OpenStore) -> None:
    store = open_store()
    _file(store, "alice", 3_000_000_000)  # past 32 bits
    _file(store, "alice", 5)
    _file(store, "bob", 7)
    assert store.stored_bytes("alice") == 3_000_000_005
    assert store.stored_bytes("carol") == 0


def test_a_file_a_live_batch_reads_is_named_until_the_batch_ends(open_store: OpenStore) -> None:
    store = open_store()
    file_id = _file(store, "alice")
    batch_id = _batch(store, file_id=file_id)
    assert store.live_batch_reading(file_id) == batch_id
    store.set_status(batch_id, "completed")
    assert store.live_batch_reading(file_id) is None


def test_a_leased_batch_goes_to_one_process_until_its_lease_lapses(
    open_store: OpenStore,
) -> None:
    one, two = open_store(), open_store()
    batch_id = _batch(one)
    claimed = one.claim("one", lease_s=0.5)
    assert claimed is not None and claimed["id"] == batch_id
    assert two.claim("two", lease_s=0.5) is None
    assert one.renew(batch_id, "one", lease_s=0.5) is not None
    time.sleep(0.6)  # "one" died without renewing
    taken = two.claim("two", lease_s=30)
    assert taken is not None and taken["id"] == batch_id
    assert one.renew(batch_id, "one", lease_s=30) is None  # "one" learns it lost the batch


def test_two_processes_claiming_take_different_batches(open_store: OpenStore) -> None:
    one, two = open_store(), open_store()
    first, second = _batch(one, "alice"), _batch(one, "bob")
    a, b = one.claim("one", lease_s=30), two.claim("two", lease_s=30)
    assert a is not None and b is not None
    assert {a["id"], b["id"]} == {first, second}
    assert one.claim("three", lease_s=30) is None


def test_a_released_batch_is_claimed_again_at_once(open_store: OpenStore) -> None:
    one, two = open_store(), open_store()
    batch_id = _batch(one)
    assert one.claim("one", lease_s=30) is not None
    one.release(batch_id, "one")
    taken = two.claim("two", lease_s=30)
    assert taken is not None and taken["id"] == batch_id


def _chunked(store: Store, lines: int, size: int) -> str:
    """A batch of `lines` one-line-each requests (lines 1..), cut into chunks of `size`."""
    batch_id = _batch(store)
    bounds = [
        ChunkBounds(
            first, min(first + size, lines + 1), 10 * (first - 1), min(size, lines + 1 - first)
        )
        for first in range(1, lines + 1, size)
    ]
    assert store.add_chunks(batch_id, bounds, total=lines)
    return batch_id


def test_progress_is_recorded_once_per_line_by_the_chunks_holder(open_store: OpenStore) -> None:
    one, two = open_store(), open_store()
    batch_id = _chunked(one, lines=3, size=3)
    assert one.claim_chunk("one", lease_s=30) is not None
    assert one.record_line(batch_id, 1, chunk=0, owner="one", ok=True, out_bytes=10,
                           err_bytes=0, grown=(10, 0), tokens=4) == 10  # fmt: skip
    assert one.record_line(batch_id, 3, chunk=0, owner="one", ok=False, out_bytes=10,
                           err_bytes=7, grown=(0, 7)) == 17  # fmt: skip
    with pytest.raises(LeaseLost):  # recorded already
        one.record_line(batch_id, 1, chunk=0, owner="one", ok=True, out_bytes=20, err_bytes=7)
    with pytest.raises(LeaseLost):  # not the holder
        two.record_line(batch_id, 4, chunk=0, owner="two", ok=True, out_bytes=20, err_bytes=7)
    row: Any = two.existing_batch(batch_id)
    assert (row["completed"], row["failed"], row["out_bytes"], row["err_bytes"]) == (1, 1, 10, 7)
    assert row["input_tokens"] == 4
    (chunk,) = two.chunks(batch_id)
    assert (chunk["next_line"], chunk["out_bytes"], chunk["err_bytes"]) == (4, 10, 7)
    assert (chunk["completed"], chunk["failed"], chunk["lease_owner"]) == (1, 1, "one")
    two.forget_chunks(batch_id)
    assert one.chunks(batch_id) == []


def test_a_batch_is_cut_into_chunks_that_two_processes_claim_in_line_order(
    open_store: OpenStore,
) -> None:
    one, two = open_store(), open_store()
    batch_id = _chunked(one, lines=10, size=4)
    row: Any = one.existing_batch(batch_id)
    assert (row["status"], row["total"]) == ("in_progress", 10)
    a, b = one.claim_chunk("one", lease_s=30), two.claim_chunk("two", lease_s=30)
    c = one.claim_chunk("one", lease_s=30)
    assert a is not None and b is not None and c is not None
    assert [(x["chunk"], x["first_line"], x["end_line"], x["lines"]) for x in (a, b, c)] == [
        (0, 1, 5, 4),
        (1, 5, 9, 4),
        (2, 9, 11, 2),
    ]
    assert two.claim_chunk("two", lease_s=30) is None  # all leased
    assert one.claim(owner="three", lease_s=30) is None  # nothing for one process alone


def test_a_chunk_whose_lease_lapsed_is_taken_over_where_it_was_recorded(
    open_store: OpenStore,
) -> None:
    one, two = open_store(), open_store()
    batch_id = _chunked(one, lines=4, size=4)
    assert one.claim_chunk("one", lease_s=0.3) is not None
    one.record_line(batch_id, 1, chunk=0, owner="one", ok=True, out_bytes=5, err_bytes=0)
    assert two.claim_chunk("two", lease_s=30) is None  # "one" holds it
    time.sleep(0.4)  # "one" died without renewing
    taken = two.claim_chunk("two", lease_s=30)
    assert taken is not None
    assert (taken["next_line"], taken["out_bytes"], taken["lease_owner"]) == (2, 5, "two")
    assert one.renew_chunks(batch_id, "one", 30, chunk=0) == 0  # "one" learns it lost it
    with pytest.raises(LeaseLost):  # and can record nothing more
        one.record_line(batch_id, 2, chunk=0, owner="one", ok=True, out_bytes=9, err_bytes=0)
    two.record_line(batch_id, 2, chunk=0, owner="two", ok=True, out_bytes=9, err_bytes=0)
    one.release_chunk(batch_id, 0, "one")  # not "one"'s to give back
    assert one.claim_chunk("one", lease_s=30) is None


def test_of_two_processes_finishing_chunks_exactly_one_finalizes(open_store: OpenStore) -> None:
    one, two = open_store(), open_store()
    batch_id = _chunked(one, lines=2, size=1)
    assert one.claim_chunk("one", lease_s=30) is not None
    assert two.claim_chunk("two", lease_s=30) is not None
    assert one.finish_chunk(batch_id, 0, "one")
    assert not one.try_finalize(batch_id, "one", lease_s=30)  # chunk 1 is not done
    assert two.finish_chunk(batch_id, 1, "two")
    wins = [store.try_finalize(batch_id, owner, lease_s=30) for store, owner in
            ((two, "two"), (one, "one"))]  # fmt: skip
    assert wins == [True, False]
    row: Any = one.existing_batch(batch_id)
    assert (row["status"], row["lease_owner"]) == ("finalizing", "two")
    assert one.claim("one", lease_s=30) is None  # "two" holds the batch while it joins
    assert two.claim("two", lease_s=30) is not None


def test_ending_a_batch_takes_its_chunks_once_their_holders_let_go(open_store: OpenStore) -> None:
    one, two = open_store(), open_store()
    batch_id = _chunked(one, lines=3, size=1)
    assert one.claim_chunk("one", lease_s=30) is not None
    assert not two.take_chunks(batch_id, "two", lease_s=30)  # chunk 0 is "one"'s
    one.release_chunk(batch_id, 0, "one")
    assert two.take_chunks(batch_id, "two", lease_s=30)
    assert {c["lease_owner"] for c in two.chunks(batch_id)} == {"two"}


def test_a_result_file_belongs_to_the_batchs_owner(open_store: OpenStore) -> None:
    store = open_store()
    batch_id = _batch(store, "alice")
    file_id = store.publish(batch_id, "output_file_id", "out.jsonl", 42, expires_at=1)
    assert store.file(file_id, "alice") is not None
    assert store.existing_batch(batch_id)["output_file_id"] == file_id
    assert store.expired_files(at=2) == [file_id]
    assert store.delete_file(file_id)
    assert store.file(file_id) is None


def test_a_cancel_is_taken_only_by_a_batch_not_yet_past_running(open_store: OpenStore) -> None:
    store = open_store()
    batch_id = _batch(store)
    assert store.request_cancel(batch_id)
    assert store.existing_batch(batch_id)["status"] == "cancelling"
    assert not store.request_cancel(batch_id)


@pytest.mark.process
def test_postgres_claims_skip_a_batch_another_replica_has_locked(
    postgres: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    one, two = PgStore(url, tmp_path), PgStore(url, tmp_path)
    try:
        locked, free = _batch(one, "alice"), _batch(one, "bob")
        # A replica in the middle of claiming `locked`: the other neither waits for it nor
        # takes it.
        with one.pg.transaction():
            one.pg.execute("SELECT id FROM batches WHERE id = %s FOR UPDATE", (locked,))
            taken = two.claim("two", lease_s=30)
            assert taken is not None and taken["id"] == free
            assert two.claim("three", lease_s=30) is None
    finally:
        one.close()
        two.close()


@pytest.mark.process
def test_replicas_starting_together_create_the_schema_once(postgres: str, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PgStore(url, tmp_path), range(4)))
    _batch(stores[0])
    assert all(len(s.batches(after=None, limit=5).rows) == 1 for s in stores)
    for store in stores:
        store.close()


@pytest.mark.process
def test_postgres_store_opens_a_new_connection_after_its_connection_was_cut(
    postgres: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    store = PgStore(url, tmp_path)
    try:
        batch_id = _batch(store)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store.pg.info.backend_pid,))
        with pytest.raises(STORE_ERRORS):  # the call that finds it cut fails; its caller retries
            store.batch(batch_id)
        assert store.existing_batch(batch_id)["id"] == batch_id
        assert store.claim("one", lease_s=30) is not None
    finally:
        store.close()
