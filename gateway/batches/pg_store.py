"""Batch API state for a fleet: the file and batch records in PostgreSQL, so that every
replica answers every file and batch call and every replica's runner claims batches from
one table.

The SQL is `store.Store`'s (owner filtering, pagination, chunks and their progress), run
through psycopg; what differs is the schema's types, the transactions, the claims, which
lock the batch or chunk they pick with `FOR UPDATE SKIP LOCKED` so that replicas claiming at
once take different chunks of one batch without waiting on each other, and notifications:
a store announces new work with `NOTIFY`, and `listen` wakes a replica's runner on it. A
replica killed mid-batch stops renewing its chunks' leases; once they lapse the other
replicas claim those chunks and resume each after its last recorded line.

File contents stay in `--batch-dir`, which the replicas share (a ReadWriteMany volume):
the runner streams input files and appends to partial result files that a resuming
replica cuts back to the recorded length, which a shared folder gives as it is
(docs/scaling.md says why not in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway.batches.store import Store, _Cursor

log = logging.getLogger(__name__)

# Types PostgreSQL needs spelled differently: sizes and counts past 2**31, lease times with
# fractions of a second.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS batches (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    in_progress_at BIGINT, finalizing_at BIGINT, completed_at BIGINT, failed_at BIGINT,
    expired_at BIGINT, cancelling_at BIGINT, cancelled_at BIGINT,
    output_file_id TEXT, error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    output_expires_s BIGINT,
    total BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    out_bytes BIGINT NOT NULL DEFAULT 0,
    err_bytes BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    served_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
ALTER TABLE batches ADD COLUMN IF NOT EXISTS served_at DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS chunks (
    batch_id TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    first_line BIGINT NOT NULL,
    end_line BIGINT NOT NULL,
    first_byte BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    lease_owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    next_line BIGINT NOT NULL,
    out_bytes BIGINT NOT NULL DEFAULT 0,
    err_bytes BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, chunk)
);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, seq);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, seq);
CREATE INDEX IF NOT EXISTS batches_live ON batches (status);
"""
# Replicas starting together would race on CREATE TABLE IF NOT EXISTS (it is not atomic in
# PostgreSQL); the first takes this lock and the others find the tables made.
_SCHEMA_LOCK = 0x6261746368  # "batch"
# Where a store says there is work (a batch created, chunks cut or given back), so that the
# other replicas' runners start within milliseconds rather than at their next poll.
CHANNEL = "gateway_batch_work"
_LISTEN_RETRY_S = 1.0


class PgStore(Store):
    """The records in the PostgreSQL database at `url` (tables created on first use), the
    file contents in the shared folder `root`."""

    _LOCK_CLAIMED = " FOR UPDATE OF b SKIP LOCKED"
    _LOCK_CHUNK = " FOR UPDATE OF c SKIP LOCKED"

    def __init__(self, url: str, root: str | os.PathLike[str]) -> None:
        self.url = url
        super().__init__(root)

    def _connect(self) -> None:
        # Autocommit, transactions explicit, as the SQLite store; one connection used from
        # the event loop thread, as there.
        self.pg = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
        with self.pg.transaction():
            self.pg.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self.pg.execute(_SCHEMA)

    @staticmethod
    def exists(root: str | os.PathLike[str]) -> bool:
        return True  # other replicas may have batches waiting

    def close(self) -> None:
        self.pg.close()

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> _Cursor:
        if self.pg.closed:
            # The connection broke (a database restart or failover): the call that saw it
            # failed and its caller retries; this one starts over on a new connection.
            self.pg = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
        # The shared SQL has no literal `%`: `?` becomes psycopg's placeholder.
        return self.pg.execute(sql.replace("?", "%s"), tuple(args))

    def _notify(self) -> None:
        # Delivered when the statement's (or the enclosing) transaction commits.
        self._execute(f"NOTIFY {CHANNEL}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.pg.closed:
            self._execute("SELECT 1")
        with self.pg.transaction():
            yield


async def listen(url: str, on_work: Callable[[], None]) -> None:
    """Forever (until cancelled): call `on_work` for every notification on `CHANNEL`. An
    asyncio connection of its own, so waiting never holds up the event loop; a broken one
    is opened again after a pause (the runner's poll covers the gap)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
                await db.execute(f"LISTEN {CHANNEL}")
                on_work()  # whatever was announced while no one listened
                async for _ in db.notifies():
                    on_work()
        except (psycopg.Error, OSError) as exc:
            log.warning("batch notifications: %s; listening again in %.0f s", exc, _LISTEN_RETRY_S)
        await asyncio.sleep(_LISTEN_RETRY_S)
