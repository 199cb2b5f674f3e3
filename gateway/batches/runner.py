"""The batch runner: one background task per gateway process that runs live batches, one at
a time, oldest first, and deletes expired files.

Lifecycle (OpenAI's): validating (count the lines) -> in_progress (run them) -> finalizing
(publish the output and error files) -> completed; or failed (an unusable input file),
cancelling -> cancelled, or expired (past `completion_window`: the lines not run yet go to
the error file with code `batch_expired`). Cancelled and expired batches keep the results
of the lines that finished.

Priority: batch work yields to interactive requests. Each line runs through the route under
`adapters.base.background(pacer)`: each of its inputs (one engine request) enters the engine
when `pacing.BatchPacer` allows (nothing interactive in flight, the batch's tokens in the
engines within a small budget while interactive requests arrive and a larger one otherwise),
at vLLM's lower priority. Up to `LINES_IN_FLIGHT` lines are open at once, so that the pacer
always has inputs ready to start.

A batch is leased to one process at a time (a row lock in SQLite, renewed while it runs),
so several `--workers` share one data folder, and a restarted gateway resumes a batch at
once after a clean stop or after the lease lapses after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson
from starlette.applications import Starlette

from adapters.base import background
from gateway.batches.lines import BatchApp, endpoint_for, failure_line, run_line
from gateway.batches.pacing import BatchPacer
from gateway.batches.store import Store, now, read_lines
from gateway.config import Settings
from gateway.serving.admission import Admission

log = logging.getLogger(__name__)
LEASE_S = 10.0
_RENEW_S = 2.0
LINES_IN_FLIGHT = 32
_IDLE_POLL_S = 5.0  # look for batches leased by a process that died
_CLEANUP_EVERY_S = 60.0
_STATUS_POLL_S = 0.1  # how often a running batch looks whether it was cancelled


class BatchService:
    """The data folder (opened on first use, so a gateway that never sees a batch never
    creates it), the runner, the batch's own admission count (batch lines never count
    against interactive requests' bound) and its pacer (`pacing.py`, built when the runner
    starts). Without `batch_dir` (an app built from bare `Settings()`, as tests do) the
    folder is temporary, removed at stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.temporary = settings.batch_dir is None
        self._root = None if settings.batch_dir is None else Path(settings.batch_dir)
        self._store: Store | None = None
        self._wake = asyncio.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.admission = Admission(settings.max_inflight_inputs)
        self.pacer: BatchPacer | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="gateway-batches-"))
        return self._root

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.root)
        return self._store

    def wake(self) -> None:
        """A batch was created or cancelled: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, app: Starlette) -> None:
        """Forever (until cancelled by the lifespan): run live batches, delete expired
        files."""
        view = BatchApp(app, self.admission)
        interactive: Admission = app.state.gateway["admission"]
        self.pacer = BatchPacer(
            interactive,
            busy_tokens=self.settings.batch_max_inflight_tokens,
            quiet_tokens=self.settings.batch_quiet_inflight_tokens,
            quiet_s=self.settings.batch_quiet_after_s,
            quiet_latency_s=self.settings.batch_quiet_latency_ms / 1000,
        )
        last_cleanup = 0.0
        try:
            while True:
                if self._store is None and self._root is not None and Store.exists(self._root):
                    self._store = Store(self._root)  # an earlier run's batches may be waiting
                if self._store is not None:
                    if time.monotonic() - last_cleanup >= _CLEANUP_EVERY_S:
                        self.cleanup()
                        last_cleanup = time.monotonic()
                    row = self.store.claim(self.owner, LEASE_S)
                    if row is not None:
                        await Job(self, view, self.pacer, row["id"]).run()
                        continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _IDLE_POLL_S)
                self._wake.clear()
        finally:
            if self._store is not None:
                self._store.close()
            if self.temporary and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    def cleanup(self, at: int | None = None) -> list[str]:
        """Delete files past their `expires_at`, and uploads abandoned mid-transfer."""
        expired = self.store.expired_files(now() if at is None else at)
        for file_id in expired:
            self.store.delete_file(file_id)
        stale = time.time() - 24 * 3600
        for upload in self.store.partial_dir.glob("upload-*.tmp"):
            with contextlib.suppress(OSError):
                if upload.stat().st_mtime < stale:
                    upload.unlink()
        if expired:
            log.info("deleted %d expired batch files", len(expired))
        return expired


class Job:
    """One batch, from wherever it stands to a final state, under this process's lease."""

    def __init__(
        self, service: BatchService, app: BatchApp, pacer: BatchPacer, batch_id: str
    ) -> None:
        self.service = service
        self.store = service.store
        self.app = app
        self.pacer = pacer
        self.id = batch_id
        self.row = self.store.existing_batch(batch_id)
        self._checked_at = 0.0

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        work = asyncio.create_task(self._advance())
        try:
            await asyncio.wait({heartbeat, work}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the lease was lost to another process: stop at once
                log.warning("batch %s: lease lost; stopping here", self.id)
        finally:
            for task in (heartbeat, work):
                task.cancel()
            await asyncio.gather(heartbeat, work, return_exceptions=True)
            if work.done() and not work.cancelled() and work.exception() is not None:
                # Not the lines' fault (they cannot raise): the disk, or a bug. Fail the batch
                # rather than claim it again in a loop.
                log.error("batch %s stopped on an error", self.id, exc_info=work.exception())
                self._fail("internal_error", "the batch stopped on a server error")
            self.store.release(self.id, self.service.owner)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(_RENEW_S)
            row = self.store.renew(self.id, self.service.owner, LEASE_S)
            if row is None:
                return
            self.row = row  # notices a cancel requested through another worker

    async def _advance(self) -> None:
        status = self.row["status"]
        if status == "validating":
            status = await self._validate()
        if status == "in_progress":
            status = await self._execute()
        if status == "cancelling":
            status = "cancelled"
        if status == "finalizing":
            status = "completed"
        if status in ("completed", "cancelled", "expired"):
            self._finish(status)

    # -- validating -----------------------------------------------------------------------

    async def _validate(self) -> str:
        limit = self.service.settings.batch_max_lines
        path = self._input_path()
        if path is None:
            return self._fail(
                "input_file_missing", f"the input file {self.row['input_file_id']} was deleted"
            )
        total = await asyncio.to_thread(lambda: sum(1 for _ in read_lines(path)))
        if total == 0:
            return self._fail("empty_file", "the input file has no requests")
        if total > limit:
            return self._fail(
                "too_many_requests",
                f"the input file has {total} requests; a batch may have at most {limit}",
            )
        if self._current_status() == "cancelling":
            return "cancelling"
        self.store.set_status(self.id, "in_progress", total=total)
        log.info("batch %s: %d requests to %s", self.id, total, self.row["endpoint"])
        return "in_progress"

    def _fail(self, code: str, message: str) -> str:
        errors = [{"code": code, "message": message, "param": None, "line": None}]
        self.store.set_status(self.id, "failed", errors=orjson.dumps(errors).decode())
        log.warning("batch %s failed: %s", self.id, message)
        return "failed"

    def _input_path(self) -> Path | None:
        row = self.store.file(self.row["input_file_id"])
        path = self.store.file_path(row["id"]) if row is not None else None
        return path if path is not None and path.exists() else None

    # -- in_progress ----------------------------------------------------------------------

    async def _execute(self) -> str:
        path = self._input_path()
        if path is None:
            return self._fail(
                "input_file_missing", f"the input file {self.row['input_file_id']} was deleted"
            )
        done = self.store.done_lines(self.id)
        endpoint = self.row["endpoint"]
        call = endpoint_for(self.app, endpoint)
        running: set[asyncio.Task[None]] = set()
        with self._partial_files() as (out, err):

            async def one(number: int, raw: bytes) -> None:
                with background(self.pacer):
                    result = await run_line(self.app, endpoint, call, raw, number)
                # From here on nothing awaits: the line and its record land together.
                target = out if result.ok else err
                target.write(result.line)
                target.flush()
                self.store.record_line(
                    self.id,
                    number,
                    ok=result.ok,
                    tokens=result.tokens,
                    out_bytes=out.tell(),
                    err_bytes=err.tell(),
                )

            stop = None
            try:
                for number, raw in read_lines(path):
                    if number in done:
                        continue
                    stop = await self._wait_turn(running)
                    if stop is not None:
                        break
                    task = asyncio.create_task(one(number, raw))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running and stop is None:
                    stop = await self._wait_turn(running, until_empty=True)
            finally:
                for task in list(running):
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            if stop == "expired":
                self._expire_rest(path, err, out)
        if stop is None:
            self.store.set_status(self.id, "finalizing")
            return "finalizing"
        return stop

    async def _wait_turn(
        self, running: set[asyncio.Task[None]], until_empty: bool = False
    ) -> str | None:
        """Wait until a line may start (or, `until_empty`, all have finished); returns
        "cancelling" or "expired" instead if the batch should stop."""
        while True:
            stop = self._stop_reason()
            if stop is not None:
                return stop
            if not running or (not until_empty and len(running) < LINES_IN_FLIGHT):
                return None
            await asyncio.wait(
                set(running), timeout=_STATUS_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )

    def _stop_reason(self) -> str | None:
        if time.monotonic() - self._checked_at >= _STATUS_POLL_S:
            # A cancel, through any worker, is a status change in the shared database.
            self._checked_at = time.monotonic()
            self.row = self.store.existing_batch(self.id)
        if self.row["status"] == "cancelling":
            return "cancelling"
        if time.time() >= self.row["expires_at"]:
            return "expired"
        return None

    def _current_status(self) -> str:
        status: str = self.store.existing_batch(self.id)["status"]
        return status

    def _expire_rest(self, path: Path, err: BinaryIO, out: BinaryIO) -> None:
        done = self.store.done_lines(self.id)
        for number, raw in read_lines(path):
            if number in done:
                continue
            custom_id = _custom_id(raw)
            err.write(
                failure_line(
                    custom_id, "batch_expired", "the batch expired before this request was run"
                )
            )
            err.flush()
            self.store.record_line(
                self.id, number, ok=False, out_bytes=out.tell(), err_bytes=err.tell()
            )

    @contextlib.contextmanager
    def _partial_files(self) -> Iterator[tuple[BinaryIO, BinaryIO]]:
        """The output and error files, cut back to what was recorded (a line written but not
        recorded before a crash is run again), opened for appending."""
        row = self.store.existing_batch(self.id)
        paths = self.store.partial_paths(self.id)
        files: list[BinaryIO] = []
        try:
            for path, size in zip(paths, (row["out_bytes"], row["err_bytes"]), strict=True):
                file = path.open("ab")
                file.truncate(size)
                file.seek(size)
                files.append(file)
            yield files[0], files[1]
        finally:
            for opened in files:
                opened.close()

    # -- final ----------------------------------------------------------------------------

    def _finish(self, status: str) -> None:
        out_path, err_path = self.store.partial_paths(self.id)
        row = self.store.existing_batch(self.id)
        expires_at = now() + row["output_expires_s"]
        for column, path, name in (
            ("output_file_id", out_path, "output"),
            ("error_file_id", err_path, "errors"),
        ):
            file_id = row[column]
            if file_id is None and path.exists() and path.stat().st_size > 0:
                file_id = self.store.publish(
                    self.id, column, f"{self.id}_{name}.jsonl", path.stat().st_size, expires_at
                )
            if file_id is not None and path.exists():
                os.replace(path, self.store.file_path(file_id))
            path.unlink(missing_ok=True)
        self.store.set_status(self.id, status)
        self.store.forget_lines(self.id)
        row = self.store.existing_batch(self.id)
        log.info(
            "batch %s %s: %d completed, %d failed", self.id, status, row["completed"], row["failed"]
        )


def _custom_id(raw: bytes) -> str | None:
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = line.get("custom_id") if isinstance(line, dict) else None
    return value if isinstance(value, str) else None
