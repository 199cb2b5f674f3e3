"""Per-key rate limits (requests and tokens per minute) and the stored-bytes cap.

Each limit is a token bucket that holds a minute's allowance and refills continuously, so a
key may burst up to its whole minute and then goes at the steady rate. A request takes one
unit from the request bucket when it is admitted. Tokens are counted after the answer, from
the request's own usage (what its `usage` reports): a request is admitted while the key's
token bucket is above zero, and its tokens are then taken, which may leave the bucket in
debt; later requests wait until the debt is paid back. That makes the count exact, at the
cost of letting one request overshoot the limit by its own size (bounded by
`--max-request-tokens`); estimating before the engine call would need a second tokenization.

The buckets live in SQLite: in memory for one process, and in a file in the batch folder
when `--workers` runs several processes on one host, so that they share one set of buckets
(one short write transaction per request, no extra process, nothing to clean up after a
worker dies; a shared-memory array would need a lock created before the workers are spawned
and a fixed slot per key, which a reloaded key file breaks). Replicas do not share: each
replica enforces the limits on its own. If the database fails, requests are let through and
the failure is logged: the limits are for fairness, not for authentication.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import APIError, ErrorKind
from gateway.tenancy.keys import Tenant

log = logging.getLogger(__name__)
FILE_NAME = "ratelimits.sqlite3"
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
)
_WINDOW_S = 60.0
_LOG_EVERY_S = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    level REAL NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (name, kind)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Decision:
    """Whether a request may go ahead, and the `x-ratelimit-*` headers for its answer."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    refused_by: str | None = None  # "requests" or "tokens"
    retry_after_s: float = 0.0

    def error(self, tenant: Tenant) -> APIError:
        """The 429 for a refused request."""
        assert self.refused_by is not None
        limit = self.headers[f"x-ratelimit-limit-{self.refused_by}"]
        seconds = max(1, math.ceil(self.retry_after_s))
        return APIError(
            ErrorKind.RATE_LIMITED,
            f"rate limit reached for {self.refused_by} of key {tenant.name}: {limit} per "
            f"minute; try again in {seconds}s",
            headers={**self.headers, "Retry-After": str(seconds)},
        )


ALLOWED = Decision(True)


class RateLimiter:
    """The buckets of every key; `default_rpm`/`default_tpm` apply to keys without their
    own (0: no limit)."""

    def __init__(
        self,
        default_rpm: int,
        default_tpm: int,
        folder: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._path = ":memory:" if folder is None else str(Path(folder) / FILE_NAME)
        self._folder = folder
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._logged = -_LOG_EVERY_S

    def limits(self, tenant: Tenant) -> tuple[int, int]:
        """(requests, tokens) per minute for `tenant`; 0 means unlimited."""
        rpm = self.default_rpm if tenant.rpm is None else tenant.rpm
        tpm = self.default_tpm if tenant.tpm is None else tenant.tpm
        return rpm, tpm

    def admit(self, tenant: Tenant) -> Decision:
        """Take one request from `tenant`'s allowance, or say when to come back."""
        rpm, tpm = self.limits(tenant)
        if not rpm and not tpm:
            return ALLOWED
        try:
            return self._admit(tenant.name, rpm, tpm)
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return ALLOWED

    def charge(self, tenant: Tenant, tokens: int) -> None:
        """Take the tokens an answered request used."""
        _, tpm = self.limits(tenant)
        if not tpm or tokens <= 0:
            return
        try:
            with self._transaction() as db:
                now = self._clock()
                level = self._level(db, tenant.name, "tokens", tpm, now)
                self._store(db, tenant.name, "tokens", level - tokens, now)
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)

    def _admit(self, name: str, rpm: int, tpm: int) -> Decision:
        now = self._clock()
        headers: dict[str, str] = {}
        refused: tuple[str, float] | None = None
        with self._transaction() as db:
            requests = self._level(db, name, "requests", rpm, now) if rpm else None
            tokens = self._level(db, name, "tokens", tpm, now) if tpm else None
            if requests is not None and requests < 1:
                refused = ("requests", (1 - requests) * _WINDOW_S / rpm)
            elif tokens is not None and tokens <= 0:
                refused = ("tokens", (1 - tokens) * _WINDOW_S / tpm)
            if requests is not None:
                if refused is None:
                    requests -= 1
                self._store(db, name, "requests", requests, now)
                headers.update(_headers("requests", rpm, requests))
            if tokens is not None:
                headers.update(_headers("tokens", tpm, tokens))
        if refused is None:
            return Decision(True, headers)
        return Decision(False, headers, refused_by=refused[0], retry_after_s=refused[1])

    def _level(self, db: sqlite3.Connection, name: str, kind: str, limit: int, now: float) -> float:
        row = db.execute(
            "SELECT level, at FROM buckets WHERE name = ? AND kind = ?", (name, kind)
        ).fetchone()
        if row is None:
            return float(limit)
        level, at = row
        refill = max(now - at, 0.0) * limit / _WINDOW_S
        return float(min(limit, level + refill))

    def _store(
        self, db: sqlite3.Connection, name: str, kind: str, level: float, now: float
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO buckets (name, kind, level, at) VALUES (?, ?, ?, ?)",
            (name, kind, level, now),
        )

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self._folder is not None:
                Path(self._folder).mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, timeout=1.0)
            db.execute("PRAGMA journal_mode=WAL")
            # Counters need no durability: a crash at worst forgets the last second's counts.
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connect())

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY_S:
            self._logged = now
            log.error("rate limits not applied: their database failed: %s", exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: the read and the write of a bucket are one step for every
    worker sharing the file."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _headers(kind: str, limit: int, level: float) -> dict[str, str]:
    """OpenAI's headers: the limit, what is left now, and the time until the bucket is full."""
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(level))),
        f"x-ratelimit-reset-{kind}": duration(max(0.0, limit - level) * _WINDOW_S / limit),
    }


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in `x-ratelimit-reset-*`: `20ms`, `1.5s`, `6m0s`."""
    millis = math.ceil(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def storage_cap(tenant: Tenant, default: int) -> int:
    """Bytes of files `tenant` may keep in the batch store; 0 means no cap."""
    return default if tenant.batch_bytes is None else tenant.batch_bytes


def check_storage(tenant: Tenant, stored: int, incoming: int, default: int) -> None:
    """413 when `incoming` more bytes would take `tenant` past its cap."""
    cap = storage_cap(tenant, default)
    if cap and stored + incoming > cap:
        raise APIError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"this key stores {stored} bytes of files; {incoming} more would pass its limit "
            f"of {cap} bytes: delete files it no longer needs",
            param="file",
            code="storage_limit_exceeded",
        )
