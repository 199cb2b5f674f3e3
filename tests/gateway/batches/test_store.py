"""The batch store's database across versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.batches.reading import ChunkBounds
from gateway.batches.store import Store, batch_object


def test_a_database_from_before_usage_gains_the_token_count(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.db.execute(
        "ALTER TABLE batches DROP COLUMN input_tokens"
    )  # as an earlier version made it
    store.close()
    with sqlite3.connect(tmp_path / "batches.sqlite3") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
    assert "input_tokens" not in columns

    store = Store(tmp_path)
    row = store.add_batch(
        endpoint="/v1/embeddings",
        input_file_id="file-" + "0" * 32,
        completion_window="24h",
        window_s=3600,
        metadata=None,
        output_expires_s=3600,
    )
    store.add_chunks(row["id"], [ChunkBounds(1, 2, 0, 1)], total=1)
    assert store.claim_chunk("one", lease_s=30) is not None
    store.record_line(
        row["id"], 1, chunk=0, owner="one", ok=True, out_bytes=10, err_bytes=0, tokens=12
    )
    usage = batch_object(store.existing_batch(row["id"]))["usage"]
    assert usage["input_tokens"] == usage["total_tokens"] == 12
    store.close()
