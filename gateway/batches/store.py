"""Batch API state: file and batch records in SQLite (WAL), file contents in a data folder.

Nothing a client sends ever becomes part of a path: ids are generated here
(`file-<32 hex>`, `batch_<32 hex>`), a path is only ever built from an id that matches that
pattern, and routes look records up by id before touching a file. Objects are returned in
OpenAI's shapes (`FileObject`, `Batch`), built in one place each.

A running batch is cut into chunks (line ranges), and every process's runner claims chunks
under leases, so a batch advances on every process at once. A chunk records its progress in
the same transaction as each finished line (lines are recorded in order): the next line,
and the byte lengths of the chunk's partial output and error files. A process that takes
over a chunk whose lease lapsed truncates those files to the recorded lengths and resumes
at the recorded line, so a line is neither lost nor written twice. Once every chunk is
done, the one process that wins the move to `finalizing` joins the parts in chunk order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.batches.reading import ChunkBounds

# Live states: a runner owns the batch (under a lease) until it reaches a final state.
LIVE_STATES = ("validating", "in_progress", "finalizing", "cancelling")
FINAL_STATES = ("completed", "failed", "expired", "cancelled")
_FILE_ID = re.compile(r"file-[0-9a-f]{32}")
_BATCH_ID = re.compile(r"batch_[0-9a-f]{32}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER,
    expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER,
    output_file_id TEXT, error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    output_expires_s INTEGER,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    out_bytes INTEGER NOT NULL DEFAULT 0,
    err_bytes INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    served_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    batch_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    first_byte INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    next_line INTEGER NOT NULL,
    out_bytes INTEGER NOT NULL DEFAULT 0,
    err_bytes INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, chunk)
) WITHOUT ROWID;
"""
# Columns a database made by an earlier version lacks: table -> name -> declaration. Rows
# from before `owner` have the empty owner: only an admin key (or a gateway without keys)
# sees them.
_ADDED_COLUMNS = {
    "batches": {
        "input_tokens": "INTEGER NOT NULL DEFAULT 0",
        "owner": "TEXT NOT NULL DEFAULT ''",
        "served_at": "REAL NOT NULL DEFAULT 0",
    },
    "files": {"owner": "TEXT NOT NULL DEFAULT ''"},
}
# After the columns exist: each key's lists are read by owner.
_INDEXES = """
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, seq);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, seq);
"""
_BATCH_TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class Row(Protocol):
    """A record read by column name: sqlite3.Row here, a dict from PostgreSQL (pg_store)."""

    def __getitem__(self, key: str) -> Any: ...


class _Cursor(Protocol):
    """What the SQL below uses of a DB-API cursor (sqlite3's and psycopg's alike)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


# The errors a store raises when its database fails (PostgreSQL's join them when psycopg is
# installed): the runner retries after them rather than failing the batch.
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite needs none
    pass
else:
    STORE_ERRORS = (sqlite3.Error, psycopg.Error)
# A result that could not be kept: the disk or the database failed.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OSError, *STORE_ERRORS)


class LeaseLost(Exception):
    """A chunk's lease passed to another process (or its batch ended): stop working on it."""


def now() -> int:
    return int(time.time())


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def is_file_id(value: str) -> bool:
    return _FILE_ID.fullmatch(value) is not None


def is_batch_id(value: str) -> bool:
    return _BATCH_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated list (`after` = the last id of the previous page)."""

    rows: list[Row]
    has_more: bool


class Store:
    """The SQLite database and the data folder under `root`, created on first use.

    The SQL is written once, with `?` parameters, for SQLite and PostgreSQL alike
    (`pg_store.PgStore` runs it there): owner filtering, pagination and the progress
    records cannot drift apart between the two backends."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.partial_dir = self.root / "partial"
        _make_private(self.root, self.files_dir, self.partial_dir)
        self._connect()

    # How claim() and claim_chunk() keep two processes from taking one batch or chunk:
    # SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL locks the row it picks,
    # and skips rows another replica has locked (pg_store).
    _LOCK_CLAIMED = ""
    _LOCK_CHUNK = ""

    def _connect(self) -> None:
        _make_private_database(self.root / "batches.sqlite3")
        # One connection, used from the event loop thread only (uploads copy bytes in a
        # thread, but record them from the loop); autocommit, transactions explicit.
        self.db = sqlite3.connect(
            self.root / "batches.sqlite3", isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed line survives a process crash; an OS crash may
        # lose the last few, which are then redone (the output files are truncated to match).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._add_missing_columns()
        self.db.executescript(_INDEXES)

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> _Cursor:
        return self.db.execute(sql, tuple(args))

    def _add_missing_columns(self) -> None:
        """Columns added since a database was created (CREATE TABLE IF NOT EXISTS keeps an
        existing table as it is)."""
        for table, columns in _ADDED_COLUMNS.items():
            have = {row["name"] for row in self._execute(f"PRAGMA table_info({table})").fetchall()}
            for column, declaration in columns.items():
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @staticmethod
    def exists(root: str | os.PathLike[str]) -> bool:
        return (Path(root) / "batches.sqlite3").exists()

    def close(self) -> None:
        self.db.close()

    # -- paths: only ever from generated ids ---------------------------------------------

    def file_path(self, file_id: str) -> Path:
        if not is_file_id(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.files_dir / file_id

    def part_paths(self, batch_id: str, chunk: int) -> tuple[Path, Path]:
        """The output and error files one chunk of a running batch appends to."""
        output, errors = self.partial_paths(batch_id)
        return (
            output.with_name(f"{batch_id}.{chunk:06d}.output.jsonl"),
            errors.with_name(f"{batch_id}.{chunk:06d}.errors.jsonl"),
        )

    def partial_paths(self, batch_id: str) -> tuple[Path, Path]:
        """The output and error files a running batch appends to."""
        if not is_batch_id(batch_id):
            raise ValueError(f"not a batch id: {batch_id!r}")
        return (
            self.partial_dir / f"{batch_id}.output.jsonl",
            self.partial_dir / f"{batch_id}.errors.jsonl",
        )

    def upload_path(self) -> Path:
        """A fresh temporary path in the data folder for an upload being received."""
        return self.partial_dir / f"upload-{uuid.uuid4().hex}.tmp"

    # -- files ---------------------------------------------------------------------------

    def add_file(
        self,
        file_id: str,
        filename: str,
        purpose: str,
        size: int,
        expires_at: int | None,
        owner: str = "",
    ) -> Row:
        self._execute(
            "INSERT INTO files (id, filename, purpose, bytes, created_at, "
            "expires_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (file_id, filename, purpose, size, now(), expires_at, owner),
        )
        return _existing(self.file(file_id), file_id)

    def file(self, file_id: str, owner: str | None = None) -> Row | None:
        """The file `file_id`, if `owner` owns it (None: whoever owns it)."""
        if owner is None:
            return self._one("SELECT * FROM files WHERE id = ?", file_id)
        return self._one("SELECT * FROM files WHERE id = ? AND owner = ?", file_id, owner)

    def files(
        self,
        *,
        after: str | None,
        limit: int,
        order: str,
        purpose: str | None,
        owner: str | None = None,
    ) -> Page:
        where, args = _owned_by(owner)
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        return self._page("files", where, args, after=after, limit=limit, order=order)

    def stored_bytes(self, owner: str) -> int:
        """Bytes of the files `owner` keeps (uploads and batch results)."""
        row = self._execute(
            "SELECT COALESCE(SUM(bytes), 0) AS total FROM files WHERE owner = ?", (owner,)
        ).fetchone()
        return int(row["total"])

    def delete_file(self, file_id: str) -> bool:
        with self._transaction():
            deleted = self._execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(deleted)

    def live_batch_reading(self, file_id: str) -> str | None:
        """The id of a live batch whose input is `file_id`, if there is one."""
        row = self._execute(
            f"SELECT id FROM batches WHERE input_file_id = ? AND status IN "
            f"({_marks(LIVE_STATES)}) LIMIT 1",
            (file_id, *LIVE_STATES),
        ).fetchone()
        return None if row is None else str(row["id"])

    def expired_files(self, at: int) -> list[str]:
        rows = self._execute(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (at,)
        ).fetchall()
        return [row["id"] for row in rows]

    # -- batches -------------------------------------------------------------------------

    def add_batch(
        self,
        *,
        endpoint: str,
        input_file_id: str,
        completion_window: str,
        window_s: int,
        metadata: dict[str, Any] | None,
        output_expires_s: int,
        owner: str = "",
    ) -> Row:
        batch_id, created = new_batch_id(), now()
        self._execute(
            "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status, "
            "created_at, expires_at, metadata, output_expires_s, owner) "
            "VALUES (?, ?, ?, ?, 'validating', ?, ?, ?, ?, ?)",
            (
                batch_id,
                endpoint,
                input_file_id,
                completion_window,
                created,
                created + window_s,
                json.dumps(metadata) if metadata is not None else None,
                output_expires_s,
                owner,
            ),
        )
        self._notify()
        return self.existing_batch(batch_id)

    def batch(self, batch_id: str, owner: str | None = None) -> Row | None:
        """The batch `batch_id`, if `owner` owns it (None: whoever owns it)."""
        if owner is None:
            return self._one("SELECT * FROM batches WHERE id = ?", batch_id)
        return self._one("SELECT * FROM batches WHERE id = ? AND owner = ?", batch_id, owner)

    def existing_batch(self, batch_id: str) -> Row:
        """A batch known to exist (batch records are never deleted)."""
        return _existing(self.batch(batch_id), batch_id)

    def batches(self, *, after: str | None, limit: int, owner: str | None = None) -> Page:
        where, args = _owned_by(owner)
        return self._page("batches", where, args, after=after, limit=limit, order="desc")

    def set_status(self, batch_id: str, status: str, **fields: Any) -> None:
        """Move a batch to `status`, stamping `<status>_at` (OpenAI's timestamps)."""
        stamp = f"{status}_at"
        if stamp in _BATCH_TIMESTAMPS:
            fields.setdefault(stamp, now())
        columns = {"status": status, **fields}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self._execute(
            f"UPDATE batches SET {assignments} WHERE id = ?", (*columns.values(), batch_id)
        )

    def request_cancel(self, batch_id: str) -> bool:
        """validating/in_progress -> cancelling; False when the batch is past that."""
        return bool(
            self._execute(
                "UPDATE batches SET status = 'cancelling', cancelling_at = ? WHERE id = ? AND "
                "status IN ('validating', 'in_progress')",
                (now(), batch_id),
            ).rowcount
        )

    def claim(self, owner: str, lease_s: float) -> Row | None:
        """A batch with work for one process only, whose lease has lapsed (or is `owner`'s),
        now leased to `owner`; None when there is none. That work is validating (cutting the
        batch into chunks), ending a cancelled or expired batch, and finalizing one whose
        chunks are all done; the lines themselves run by chunk (`claim_chunk`), on every
        process at once.

        The pick decides who waits: cancellations first (they take no time), then the batch
        of the API key whose last batch started longest ago, oldest first within a key."""
        at = time.time()
        with self._transaction():
            row = self._execute(
                "SELECT id FROM batches AS b WHERE (status IN ('validating', 'cancelling', "
                "'finalizing') OR (status = 'in_progress' AND (expires_at <= ? OR NOT EXISTS "
                "(SELECT 1 FROM chunks AS c WHERE c.batch_id = b.id AND c.status != 'done')))) "
                "AND (lease_until < ? OR lease_owner = ?) ORDER BY status != 'cancelling', "
                "(SELECT COALESCE(MAX(o.in_progress_at), 0) FROM batches AS o "
                f"WHERE o.owner = b.owner AND o.id != b.id), seq LIMIT 1{self._LOCK_CLAIMED}",
                (int(at), at, owner),
            ).fetchone()
            if row is None:
                return None
            self._execute(
                "UPDATE batches SET lease_owner = ?, lease_until = ? WHERE id = ?",
                (owner, at + lease_s, row["id"]),
            )
        return self.batch(row["id"])

    def renew(self, batch_id: str, owner: str, lease_s: float) -> Row | None:
        """Extend `owner`'s lease; the fresh record, or None if another owner took it."""
        updated = self._execute(
            "UPDATE batches SET lease_until = ? WHERE id = ? AND lease_owner = ?",
            (time.time() + lease_s, batch_id, owner),
        ).rowcount
        return self.batch(batch_id) if updated else None

    def release(self, batch_id: str, owner: str) -> None:
        """Give the lease up at once (clean shutdown), so a restart resumes without waiting."""
        self._execute(
            "UPDATE batches SET lease_until = 0 WHERE id = ? AND lease_owner = ?", (batch_id, owner)
        )

    # -- chunks: a batch's lines, run on every process at once ---------------------------

    def add_chunks(self, batch_id: str, bounds: Iterable[ChunkBounds], total: int) -> bool:
        """validating -> in_progress with its chunks, in one transaction; False when the
        batch left validating meanwhile (a cancel)."""
        with self._transaction():
            if not self._execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?, total = ? "
                "WHERE id = ? AND status = 'validating'",
                (now(), total, batch_id),
            ).rowcount:
                return False
            self._execute("DELETE FROM chunks WHERE batch_id = ?", (batch_id,))
            for number, chunk in enumerate(bounds):
                self._execute(
                    "INSERT INTO chunks (batch_id, chunk, first_line, end_line, first_byte, "
                    "lines, next_line) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (batch_id, number, chunk.first_line, chunk.end_line, chunk.first_byte,
                     chunk.lines, chunk.first_line),
                )  # fmt: skip
        self._notify()
        return True

    def claim_chunk(self, owner: str, lease_s: float) -> Row | None:
        """The next chunk of a running batch that no live lease holds, now leased to `owner`;
        None when there is none. Keys take turns: the chunk of the key served longest ago,
        its oldest batch first, in line order."""
        at = time.time()
        with self._transaction():
            row = self._execute(
                "SELECT c.batch_id, c.chunk FROM chunks AS c JOIN batches AS b ON "
                "b.id = c.batch_id WHERE b.status = 'in_progress' AND b.expires_at > ? AND "
                "c.status != 'done' AND c.lease_until < ? ORDER BY (SELECT MAX(o.served_at) "
                "FROM batches AS o WHERE o.owner = b.owner), b.seq, c.chunk "
                f"LIMIT 1{self._LOCK_CHUNK}",
                (int(at), at),
            ).fetchone()
            if row is None:
                return None
            batch_id, chunk = row["batch_id"], row["chunk"]
            self._execute(
                "UPDATE chunks SET status = 'running', lease_owner = ?, lease_until = ? "
                "WHERE batch_id = ? AND chunk = ?",
                (owner, at + lease_s, batch_id, chunk),
            )
            self._execute("UPDATE batches SET served_at = ? WHERE id = ?", (at, batch_id))
        return self.chunk(batch_id, chunk)

    def chunk(self, batch_id: str, chunk: int) -> Row | None:
        return self._one("SELECT * FROM chunks WHERE batch_id = ? AND chunk = ?", batch_id, chunk)

    def chunks(self, batch_id: str) -> list[Row]:
        return self._execute(
            "SELECT * FROM chunks WHERE batch_id = ? ORDER BY chunk", (batch_id,)
        ).fetchall()

    def renew_chunks(self, batch_id: str, owner: str, lease_s: float, chunk: int = -1) -> int:
        """Extend `owner`'s leases on the batch's running chunks (only `chunk`, if given);
        how many it still holds."""
        return self._execute(
            "UPDATE chunks SET lease_until = ? WHERE batch_id = ? AND lease_owner = ? AND "
            "status = 'running' AND (chunk = ? OR ? = -1)",
            (time.time() + lease_s, batch_id, owner, chunk, chunk),
        ).rowcount

    def release_chunk(self, batch_id: str, chunk: int, owner: str) -> None:
        """Give a chunk back at once (a stop, a pause, a shutdown) for any process to resume."""
        released = self._execute(
            "UPDATE chunks SET status = 'pending', lease_until = 0 WHERE batch_id = ? AND "
            "chunk = ? AND lease_owner = ? AND status = 'running'",
            (batch_id, chunk, owner),
        ).rowcount
        if released:
            self._notify()

    def take_chunks(self, batch_id: str, owner: str, lease_s: float) -> bool:
        """Lease every unfinished chunk of the batch to `owner` whose lease has lapsed; True
        once `owner` holds them all (ending a cancelled or expired batch waits for that)."""
        at = time.time()
        with self._transaction():
            self._execute(
                "UPDATE chunks SET status = 'running', lease_owner = ?, lease_until = ? WHERE "
                "batch_id = ? AND status != 'done' AND (lease_until < ? OR lease_owner = ?)",
                (owner, at + lease_s, batch_id, at, owner),
            )
            row = self._execute(
                "SELECT COUNT(*) AS held FROM chunks WHERE batch_id = ? AND status != 'done' "
                "AND lease_owner != ?",
                (batch_id, owner),
            ).fetchone()
        return int(row["held"]) == 0

    def record_line(
        self,
        batch_id: str,
        line: int,
        *,
        chunk: int,
        owner: str,
        ok: bool,
        out_bytes: int,
        err_bytes: int,
        grown: tuple[int, int] = (0, 0),
        tokens: int = 0,
    ) -> int:
        """One finished line of a chunk `owner` holds, with the chunk's part files' lengths
        after its result was written (`grown`: by how much each) and the input tokens its
        request consumed; the bytes of results the batch holds now, across chunks. Lines are
        recorded in order: the chunk resumes after the last one. `LeaseLost` if `owner` no
        longer holds the chunk, or the line was recorded already."""
        counter = "completed" if ok else "failed"
        with self._transaction():
            if not self._execute(
                f"UPDATE chunks SET next_line = ?, out_bytes = ?, err_bytes = ?, "
                f"{counter} = {counter} + 1 WHERE batch_id = ? AND chunk = ? AND "
                "lease_owner = ? AND status = 'running' AND next_line <= ?",
                (line + 1, out_bytes, err_bytes, batch_id, chunk, owner, line),
            ).rowcount:
                raise LeaseLost(f"batch {batch_id}: chunk {chunk} is no longer {owner}'s")
            row = self._execute(
                f"UPDATE batches SET {counter} = {counter} + 1, out_bytes = out_bytes + ?, "
                "err_bytes = err_bytes + ?, input_tokens = input_tokens + ? WHERE id = ? "
                "RETURNING out_bytes + err_bytes AS written",
                (*grown, tokens, batch_id),
            ).fetchone()
        return int(row["written"])

    def finish_chunk(self, batch_id: str, chunk: int, owner: str) -> bool:
        """Mark `owner`'s chunk done; False if it was no longer `owner`'s."""
        return bool(
            self._execute(
                "UPDATE chunks SET status = 'done', lease_until = 0 WHERE batch_id = ? AND "
                "chunk = ? AND lease_owner = ? AND status = 'running'",
                (batch_id, chunk, owner),
            ).rowcount
        )

    def try_finalize(self, batch_id: str, owner: str, lease_s: float) -> bool:
        """in_progress -> finalizing, leased to `owner`, if every chunk is done and no other
        process holds the batch: of the processes that finish chunks, exactly one wins."""
        at = time.time()
        return bool(
            self._execute(
                "UPDATE batches SET status = 'finalizing', finalizing_at = ?, lease_owner = ?, "
                "lease_until = ? WHERE id = ? AND status = 'in_progress' AND "
                "(lease_until < ? OR lease_owner = ?) AND EXISTS (SELECT 1 FROM chunks "
                "WHERE batch_id = ?) AND NOT EXISTS (SELECT 1 FROM chunks WHERE batch_id = ? "
                "AND status != 'done')",
                (now(), owner, at + lease_s, batch_id, at, owner, batch_id, batch_id),
            ).rowcount
        )

    def forget_chunks(self, batch_id: str) -> None:
        self._execute("DELETE FROM chunks WHERE batch_id = ?", (batch_id,))

    def publish(self, batch_id: str, column: str, filename: str, size: int, expires_at: int) -> str:
        """Record a result file (purpose `batch_output`) as the batch's output or error
        file, in one transaction; the caller then moves the content into place."""
        assert column in ("output_file_id", "error_file_id")
        file_id = new_file_id()
        with self._transaction():
            # The result belongs to whoever owns the batch.
            self._execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at, "
                "owner) SELECT ?, ?, 'batch_output', ?, ?, ?, owner FROM batches WHERE id = ?",
                (file_id, filename, size, now(), expires_at, batch_id),
            )
            self._execute(f"UPDATE batches SET {column} = ? WHERE id = ?", (file_id, batch_id))
        return file_id

    # -- helpers -------------------------------------------------------------------------

    def _page(
        self,
        table: str,
        where: list[str],
        args: list[Any],
        *,
        after: str | None,
        limit: int,
        order: str,
    ) -> Page:
        if after is not None:
            anchor = self._execute(f"SELECT seq FROM {table} WHERE id = ?", (after,)).fetchone()
            if anchor is not None:
                where.append("seq < ?" if order == "desc" else "seq > ?")
                args.append(anchor["seq"])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if order == "desc" else "ASC"
        rows = self._execute(
            f"SELECT * FROM {table} {clause} ORDER BY seq {direction} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page(rows[:limit], len(rows) > limit)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    def _notify(self) -> None:
        """Tell the other processes' runners there is work (PostgreSQL: pg_store); here they
        find it at their next poll."""

    def _one(self, sql: str, *args: object) -> Row | None:
        row: Row | None = self._execute(sql, args).fetchone()  # the row factory's type
        return row


def _make_private(root: Path, *folders: Path) -> None:
    """Uploads and results are other people's documents and their vectors: the folders are
    for the gateway's user alone (0700)."""
    for folder in (root, *folders):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a mount point the gateway does not own
            folder.chmod(0o700)


def _make_private_database(database: Path) -> None:
    """The database too (0600; SQLite gives its -wal and -shm files the database's mode)."""
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    with contextlib.suppress(OSError):
        database.chmod(0o600)


def _existing(row: Row | None, record_id: str) -> Row:
    if row is None:
        raise LookupError(f"no record {record_id}")
    return row


def _owned_by(owner: str | None) -> tuple[list[str], list[Any]]:
    """The WHERE terms that keep `owner`'s rows (none for None: every row)."""
    return (["owner = ?"], [owner]) if owner is not None else ([], [])


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


# -- OpenAI object shapes -----------------------------------------------------------------


def file_object(row: Row) -> dict[str, Any]:
    """openai.types.FileObject."""
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


def batch_object(row: Row) -> dict[str, Any]:
    """openai.types.Batch."""
    body = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        **{stamp: row[stamp] for stamp in _BATCH_TIMESTAMPS},
        "request_counts": {
            "total": row["total"],
            "completed": row["completed"],
            "failed": row["failed"],
        },
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        # Embedding and rerank requests have no output tokens; the gateway's vector cache
        # does not count as OpenAI's prompt cache, so no cached tokens either.
        "usage": {
            "input_tokens": row["input_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row["input_tokens"],
        },
    }
    if row["errors"]:
        body["errors"] = {"object": "list", "data": json.loads(row["errors"])}
    return body


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The cursor page openai-python reads (`after` = the last id)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line of a JSONL file."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield number, line
