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
once after a clean stop or after the lease lapses after a crash. With
`--batch-database-url` the leases live in PostgreSQL and the processes are a fleet's
replicas sharing one folder (pg_store.py): a batch killed with its replica resumes on
another.
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
from gateway.batches.health import RunnerHealth
from gateway.batches.lines import BatchApp, LineResult, endpoint_for, failure_line, run_line
from gateway.batches.pacing import BatchPacer
from gateway.batches.pg_store import PgStore
from gateway.batches.reading import (
    Oversize,
    bounded_lines,
    count_lines,
    custom_id_of,
    lines_off_loop,
)
from gateway.batches.results import (
    DiskLow,
    OutputTooLarge,
    ResultFiles,
    SpaceGuard,
    free_bytes,
    open_private,
)
from gateway.batches.store import (
    FINAL_STATES,
    STORAGE_ERRORS,
    STORE_ERRORS,
    Store,
    is_batch_id,
    now,
)
from gateway.config import Settings
from gateway.http.tracing import annotate, chunk
from gateway.serving.admission import Admission
from gateway.tenancy.keys import Tenant, current_tenant

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
        self.health = RunnerHealth()
        self.free_bytes = free_bytes  # free space on the data folder's disk

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="gateway-batches-"))
        return self._root

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._open()
        return self._store

    def _open(self) -> Store:
        url = self.settings.batch_database_url
        return Store(self.root) if url is None else PgStore(url, self.root)

    def wake(self) -> None:
        """A batch was created or cancelled: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, app: Starlette) -> None:
        """Forever (until cancelled by the lifespan): run live batches, delete expired
        files. A store or disk error is logged and retried after a backoff (`health.py`);
        the store is closed only here, at shutdown."""
        view = BatchApp(app, self.admission)
        interactive: Admission = app.state.gateway["admission"]
        metrics = app.state.gateway["metrics"]
        self.health = RunnerHealth(on_change=metrics.set_batch_runner)
        self.pacer = BatchPacer(
            interactive,
            busy_tokens=self.settings.batch_max_inflight_tokens,
            quiet_tokens=self.settings.batch_quiet_inflight_tokens,
            quiet_s=self.settings.batch_quiet_after_s,
            quiet_latency_s=self.settings.batch_quiet_latency_ms / 1000,
        )
        self._last_cleanup = 0.0
        try:
            while True:
                try:
                    await self._step(view, self.pacer)
                except DiskLow as exc:
                    log.warning("batch runner: %s", exc)
                    await asyncio.sleep(self.health.paused(str(exc)))
                except Exception as exc:  # the loop must outlive any one failure
                    delay = self.health.failed(exc)
                    log.error(
                        "batch runner: %s; retrying in %.1f s",
                        self.health.last_error,
                        delay,
                        exc_info=not isinstance(exc, STORAGE_ERRORS),
                    )
                    await asyncio.sleep(delay)
                else:
                    self.health.ok()
        finally:
            if self._store is not None:
                self._store.close()
            if self.temporary and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    async def _step(self, view: BatchApp, pacer: BatchPacer) -> None:
        """Run the next live batch as far as it goes, or wait for one."""
        if self._store is None and self._waiting_elsewhere():
            self._store = self._open()  # an earlier run's (or another replica's) batches
        if self._store is not None:
            if time.monotonic() - self._last_cleanup >= _CLEANUP_EVERY_S:
                self.cleanup()
                self._last_cleanup = time.monotonic()
            row = self.store.claim(self.owner, LEASE_S)
            if row is not None:
                await Job(self, view, pacer, row["id"]).run()
                return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), _IDLE_POLL_S)
        self._wake.clear()

    def _waiting_elsewhere(self) -> bool:
        if self.settings.batch_database_url is not None:
            return True
        return self._root is not None and Store.exists(self._root)

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
        for partial in self.store.partial_dir.glob("batch_*.jsonl"):
            batch_id = partial.name.split(".")[0]
            row = self.store.batch(batch_id) if is_batch_id(batch_id) else None
            if row is None or row["status"] in FINAL_STATES:  # left by a batch that ended
                partial.unlink(missing_ok=True)
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
        """Advance the batch until it ends or stops. A disk or store error (or a pause for
        free space) stops it where it stands and is raised to the runner, which tries again
        later: what was recorded is kept, the rest runs again."""
        heartbeat = asyncio.create_task(self._heartbeat())
        work = asyncio.create_task(self._advance())
        error: BaseException | None = None
        try:
            await asyncio.wait({heartbeat, work}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the lease was lost to another process: stop at once
                log.warning("batch %s: lease lost; stopping here", self.id)
        finally:
            for task in (heartbeat, work):
                task.cancel()
            await asyncio.gather(heartbeat, work, return_exceptions=True)
            try:
                error = self._settle(_error_of(work) or _error_of(heartbeat))
            except STORAGE_ERRORS as exc:  # failing it failed: the runner retries
                error = exc
            with contextlib.suppress(*STORE_ERRORS):  # else the lease lapses on its own
                self.store.release(self.id, self.service.owner)
        if error is not None:
            raise error

    def _settle(self, error: BaseException | None) -> BaseException | None:
        """Fail the batch for an error that running it again would repeat; the error to
        raise to the runner for one that may pass (disk, store, a pause), else None."""
        if isinstance(error, OutputTooLarge):
            self._fail("output_too_large", str(error))
            return None
        if error is not None and not isinstance(error, (DiskLow, OSError, *STORE_ERRORS)):
            # A bug, not the lines' fault (they cannot raise): fail the batch rather than
            # claim it again in a loop.
            log.error("batch %s stopped on an error", self.id, exc_info=error)
            self._fail("internal_error", "the batch stopped on a server error")
            return None
        return error

    async def _heartbeat(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(_RENEW_S)
            try:
                row = self.store.renew(self.id, self.service.owner, LEASE_S)
            except STORE_ERRORS:
                # A busy database: keep trying while the lease still holds.
                if time.monotonic() - renewed > LEASE_S - _RENEW_S:
                    raise
                log.warning("batch %s: lease renewal failed; retrying", self.id, exc_info=True)
                continue
            if row is None:
                return
            renewed = time.monotonic()
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
        total = await asyncio.to_thread(count_lines, path, self._max_line_bytes)
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
        """End the batch as failed; the requests that did not complete count as failed, and
        its partial files go."""
        errors = [{"code": code, "message": message, "param": None, "line": None}]
        row = self.store.existing_batch(self.id)
        self.store.set_status(
            self.id,
            "failed",
            errors=orjson.dumps(errors).decode(),
            failed=max(row["total"] - row["completed"], row["failed"]),
        )
        self.store.forget_lines(self.id)
        for path in self.store.partial_paths(self.id):
            path.unlink(missing_ok=True)
        log.warning("batch %s failed: %s", self.id, message)
        return "failed"

    @property
    def _max_line_bytes(self) -> int:
        # A line carries one request: the limit of a request body over HTTP.
        return self.service.settings.max_body_bytes

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
        settings = self.service.settings
        guard = SpaceGuard(
            self.store.root,
            settings.batch_min_free_bytes,
            settings.batch_max_output_bytes,
            free=self.service.free_bytes,
        )
        # The lines are the owner's requests: they use its partition of the embedding cache.
        owner = Tenant(name=self.row["owner"])
        running: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())  # type: ignore[arg-type]

        traces = self.app.state["tracing"]
        with self._partial_files(guard) as results:

            async def one(number: int, raw: bytes | Oversize) -> None:
                current_tenant.set(owner)  # in this line's task only
                if isinstance(raw, Oversize):
                    result = _oversize(number, raw, self._max_line_bytes)
                else:
                    with (
                        chunk(traces, "batch line", batch=self.id, line=number) as span,
                        background(self.pacer),
                    ):
                        result = await run_line(self.app, endpoint, call, raw, number)
                        annotate(span, ok=result.ok, tokens=result.tokens)
                results.add(number, result)

            stop = None
            try:
                lines = lines_off_loop(path, self._max_line_bytes)
                async with contextlib.aclosing(lines):
                    async for number, raw in lines:
                        if number in done:
                            continue
                        stop = await self._wait_turn(running, errors)
                        if stop is not None:
                            break
                        guard.check_room()
                        task = asyncio.create_task(one(number, raw))
                        running.add(task)
                        task.add_done_callback(finished)
                while running and stop is None:
                    stop = await self._wait_turn(running, errors, until_empty=True)
            finally:
                for task in list(running):
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            if errors:  # a line's result could not be stored: stop here, resume later
                raise errors[0]
            if stop == "expired":
                await self._expire_rest(path, results)
        if stop is None:
            self.store.set_status(self.id, "finalizing")
            return "finalizing"
        return stop

    async def _wait_turn(
        self,
        running: set[asyncio.Task[None]],
        errors: list[BaseException],
        until_empty: bool = False,
    ) -> str | None:
        """Wait until a line may start (or, `until_empty`, all have finished); returns
        "cancelling" or "expired" instead if the batch should stop, "error" if a line
        failed."""
        while True:
            stop = "error" if errors else self._stop_reason()
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

    async def _expire_rest(self, path: Path, results: ResultFiles) -> None:
        done = self.store.done_lines(self.id)
        rest = await asyncio.to_thread(
            lambda: [
                (number, custom_id_of(raw))
                for number, raw in bounded_lines(path, self._max_line_bytes)
                if number not in done
            ]
        )
        for number, custom_id in rest:
            results.add_failure(
                number, custom_id, "batch_expired", "the batch expired before this request was run"
            )

    @contextlib.contextmanager
    def _partial_files(self, guard: SpaceGuard) -> Iterator[ResultFiles]:
        """The output and error files, cut back to what was recorded (a line written but not
        recorded before a crash is run again), opened for appending."""
        row = self.store.existing_batch(self.id)
        paths = self.store.partial_paths(self.id)
        files: list[BinaryIO] = []
        try:
            for path, size in zip(paths, (row["out_bytes"], row["err_bytes"]), strict=True):
                files.append(open_private(path, size))
            yield ResultFiles(self.store, self.id, files[0], files[1], guard)
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


def _oversize(number: int, raw: Oversize, limit: int) -> LineResult:
    message = (
        f"line {number} has {raw.size} bytes, more than a request may have "
        f"({limit}, --max-body-bytes); it was not read"
    )
    return LineResult(False, failure_line(None, "line_too_large", message))


def _error_of(task: asyncio.Task[object]) -> BaseException | None:
    if not task.done() or task.cancelled():
        return None
    return task.exception()
