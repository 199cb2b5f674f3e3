"""The batch runner: one background task per gateway process that runs the chunks of live
batches, several at a time, and deletes expired files.

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

Chunks: once validated, a batch's lines are cut into chunks (line ranges, `chunk_size`), and
every process's runner claims chunks under leases (renewed while it works), so one batch
advances on every process at once: the `--workers` of one host sharing one data folder, or,
with `--batch-database-url`, a fleet's replicas sharing one folder and one PostgreSQL
database (pg_store.py, whose notifications wake the other replicas at once). Each chunk
writes its own part files and records its progress line by line, in line order; a chunk
whose process died is taken over once its lease lapses, its part files cut back to what was
recorded. Work that one process must do alone (validating, ending a cancelled or expired
batch, and finalizing: joining the parts in chunk order) runs under a lease on the batch.
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
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from starlette.applications import Starlette

from adapters.base import background
from gateway.batches import results as result_files
from gateway.batches.health import RunnerHealth
from gateway.batches.lines import BatchApp, LineResult, endpoint_for, failure_line, run_line
from gateway.batches.pacing import BatchPacer
from gateway.batches.pg_store import PgStore, listen
from gateway.batches.reading import (
    Oversize,
    bounded_lines,
    count_lines,
    custom_id_of,
    cut_chunks,
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
    LeaseLost,
    Row,
    Store,
    is_batch_id,
    now,
)
from gateway.config import Settings
from gateway.http.tracing import annotate
from gateway.http.tracing import chunk as chunk_span
from gateway.serving.admission import Admission
from gateway.tenancy.keys import Tenant, current_tenant

log = logging.getLogger(__name__)
LEASE_S = 10.0
_RENEW_S = 2.0
LINES_IN_FLIGHT = 32
# Lines per chunk: a chunk costs a claim, two part files and a lease renewal every 2 s, which
# 64 lines make small next to the lines' work, while a batch of a few hundred lines still
# spreads over several processes.
CHUNK_LINES = 64
# A smaller batch is cut into at least this many chunks (of one line or more), so that two
# processes share even a small batch: a runner holds at most _HELD_CHUNKS chunks at once.
MIN_CHUNKS = 8
_HELD_CHUNKS = 4
_IDLE_POLL_S = 5.0  # look for chunks leased by a process that died
_TAKE_WAIT_S = 0.1  # how often ending a batch looks whether other processes let its chunks go
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
        self._chunks: dict[asyncio.Task[None], ChunkJob] = {}
        self._listener: asyncio.Task[None] | None = None

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
        """A batch was created or cancelled, or a chunk ended: look now rather than at the
        next poll."""
        self._wake.set()

    def running_chunks(self, batch_id: str) -> bool:
        """Whether this process still runs chunks of the batch (they hold leases in its name)."""
        return any(job.id == batch_id for task, job in self._chunks.items() if not task.done())

    @property
    def lines_in_flight(self) -> int:
        return sum(len(job.running) for job in self._chunks.values())

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
            # Each chunk gives its lease back as it stops: a restart resumes at once.
            tasks = [*self._chunks, *([self._listener] if self._listener else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._store is not None:
                self._store.close()
            if self.temporary and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    async def _step(self, view: BatchApp, pacer: BatchPacer) -> None:
        """Do the next piece of batch work that one process must do alone, or take chunks
        until this process has lines enough to run; then wait for news."""
        if self._store is None and self._waiting_elsewhere():
            self._store = self._open()  # an earlier run's (or another replica's) batches
        if self._store is not None:
            self._listen()
            if time.monotonic() - self._last_cleanup >= _CLEANUP_EVERY_S:
                self.cleanup()
                self._last_cleanup = time.monotonic()
            self._reap()
            row = self.store.claim(self.owner, LEASE_S)
            if row is not None:
                await Job(self, view, pacer, row["id"]).run()
                return
            self._claim_chunks(view, pacer)
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that arrives as
        # the event is set (a chunk ending at shutdown), and the lifespan would wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_IDLE_POLL_S):
                await self._wake.wait()
        self._wake.clear()

    def _claim_chunks(self, view: BatchApp, pacer: BatchPacer) -> None:
        """Claim chunks while this process holds fewer than `_HELD_CHUNKS` and their lines
        not yet started would not fill `LINES_IN_FLIGHT`: it takes what it can run, and
        leaves the rest to the other processes."""
        while (
            len(self._chunks) < _HELD_CHUNKS
            and sum(job.unstarted for job in self._chunks.values()) < LINES_IN_FLIGHT
        ):
            row = self.store.claim_chunk(self.owner, LEASE_S)
            if row is None:
                return
            job = ChunkJob(self, view, pacer, row)
            task = asyncio.create_task(job.run(), name=f"batch-chunk-{job.batch_id}-{job.number}")
            task.add_done_callback(lambda _: self._wake.set())
            self._chunks[task] = job

    def _reap(self) -> None:
        """Forget the chunks that stopped; raise the first one's error to the loop (a disk or
        store error: it backs off, then claims again)."""
        errors = []
        for task in [task for task in self._chunks if task.done()]:
            del self._chunks[task]
            if (error := _error_of(task)) is not None:
                errors.append(error)
        for error in errors[1:]:
            log.warning("batch runner: %s", error)
        if errors:
            raise errors[0]

    def _listen(self) -> None:
        url = self.settings.batch_database_url
        if url is not None and self._listener is None:
            self._listener = asyncio.create_task(listen(url, self.wake), name="batch-notify")

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


def chunk_size(total: int) -> int:
    """Lines per chunk for a batch of `total` lines: `CHUNK_LINES`, or fewer so that the
    batch has at least `MIN_CHUNKS` chunks."""
    return max(1, min(CHUNK_LINES, -(-total // MIN_CHUNKS)))


class _Leased:
    """Work under a lease: `_work` runs while `_renew` keeps the lease; a lease lost stops
    the work at once. `_settle` decides what an error means; the lease is given back at the
    end, whatever happened."""

    name = ""

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        work = asyncio.create_task(self._work())
        error: BaseException | None = None
        try:
            await asyncio.wait({heartbeat, work}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the lease was lost to another process: stop at once
                log.warning("%s: lease lost; stopping here", self.name)
        finally:
            for task in (heartbeat, work):
                task.cancel()
            await asyncio.gather(heartbeat, work, return_exceptions=True)
            try:
                error = self._settle(_error_of(work) or _error_of(heartbeat))
            except STORAGE_ERRORS as exc:  # failing it failed: the runner retries
                error = exc
            with contextlib.suppress(*STORE_ERRORS):  # else the lease lapses on its own
                self._release()
        if error is not None:
            raise error

    async def _heartbeat(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(_RENEW_S)
            try:
                held = self._renew()
            except STORE_ERRORS:
                # A busy database: keep trying while the lease still holds.
                if time.monotonic() - renewed > LEASE_S - _RENEW_S:
                    raise
                log.warning("%s: lease renewal failed; retrying", self.name, exc_info=True)
                continue
            if not held:
                return
            renewed = time.monotonic()

    async def _work(self) -> None:
        raise NotImplementedError

    def _renew(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _settle(self, error: BaseException | None) -> BaseException | None:
        raise NotImplementedError


class _BatchWork(_Leased):
    """What the batch's work and its chunks' share: the input file, its settings, failing."""

    def __init__(self, service: BatchService, app: BatchApp, pacer: BatchPacer, batch_id: str):
        self.service = service
        self.store = service.store
        self.app = app
        self.pacer = pacer
        self.id = batch_id
        self.row = self.store.existing_batch(batch_id)

    def _settle(self, error: BaseException | None) -> BaseException | None:
        """Fail the batch for an error that running it again would repeat; the error to
        raise to the runner for one that may pass (disk, store, a pause), else None."""
        if isinstance(error, LeaseLost):
            log.info("%s: %s; stopping here", self.name, error)
            return None
        if isinstance(error, OutputTooLarge):
            self._fail("output_too_large", str(error))
            return None
        if error is not None and not isinstance(error, (DiskLow, OSError, *STORE_ERRORS)):
            # A bug, not the lines' fault (they cannot raise): fail the batch rather than
            # claim it again in a loop.
            log.error("%s stopped on an error", self.name, exc_info=error)
            self._fail("internal_error", "the batch stopped on a server error")
            return None
        return error

    def _fail(self, code: str, message: str) -> str:
        """End the batch as failed; the requests that did not complete count as failed, and
        its partial files go (the processes running its other chunks stop as they see it)."""
        errors = [{"code": code, "message": message, "param": None, "line": None}]
        row = self.store.existing_batch(self.id)
        if row["status"] in FINAL_STATES:
            return str(row["status"])
        self.store.set_status(
            self.id,
            "failed",
            errors=orjson.dumps(errors).decode(),
            failed=max(row["total"] - row["completed"], row["failed"]),
        )
        self.store.forget_chunks(self.id)
        for path in self.store.partial_dir.glob(f"{self.id}.*"):
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

    def _guard(self) -> SpaceGuard:
        settings = self.service.settings
        return SpaceGuard(
            self.store.root,
            settings.batch_min_free_bytes,
            settings.batch_max_output_bytes,
            free=self.service.free_bytes,
        )

    @contextlib.contextmanager
    def _part_files(self, chunk: Row, guard: SpaceGuard) -> Iterator[ResultFiles]:
        """A chunk's output and error files, cut back to what was recorded (a line written but
        not recorded before a crash is run again), opened for appending."""
        paths = self.store.part_paths(self.id, chunk["chunk"])
        files: list[BinaryIO] = []
        written = self.row["out_bytes"] + self.row["err_bytes"]
        try:
            for path, size in zip(paths, (chunk["out_bytes"], chunk["err_bytes"]), strict=True):
                files.append(open_private(path, size))
            yield ResultFiles(
                self.store,
                self.id,
                (chunk["chunk"], self.service.owner),
                (files[0], files[1]),
                guard,
                written,
            )
        finally:
            for opened in files:
                opened.close()


class Job(_BatchWork):
    """The work on a batch that one process does alone, under this process's lease on the
    batch: validating and cutting it into chunks, ending it once cancelled or expired, and
    finalizing it once every chunk is done."""

    def __init__(
        self, service: BatchService, app: BatchApp, pacer: BatchPacer, batch_id: str
    ) -> None:
        super().__init__(service, app, pacer, batch_id)
        self.name = f"batch {batch_id}"

    def _renew(self) -> bool:
        row = self.store.renew(self.id, self.service.owner, LEASE_S)
        if row is None:
            return False
        self.store.renew_chunks(self.id, self.service.owner, LEASE_S)  # taken to end it
        self.row = row
        return True

    def _release(self) -> None:
        self.store.release(self.id, self.service.owner)

    async def _work(self) -> None:
        status = self.row["status"]
        if status == "in_progress" and not self.store.chunks(self.id):
            status = self._restart()
        if status == "validating":
            status = await self._validate()
            if status != "cancelling":
                return  # the chunks run on every process (claim_chunk)
        if status == "in_progress":
            if time.time() >= self.row["expires_at"]:
                await self._expire_rest()
                status = "expired"
            elif self.store.try_finalize(self.id, self.service.owner, LEASE_S):
                status = "finalizing"
            else:
                return
        if status == "cancelling":
            await self._take_chunks()
            status = "cancelled"
        if status == "finalizing":
            status = "completed"
        if status in ("completed", "cancelled", "expired"):
            await self._finish(status)

    def _restart(self) -> str:
        """A batch left in progress by a version that ran batches whole, without chunks: run
        it again from the start (its partial results are dropped, not joined)."""
        log.warning("batch %s: in progress without chunks; running it again", self.id)
        self.store.set_status(
            self.id, "validating", completed=0, failed=0, out_bytes=0, err_bytes=0,
            input_tokens=0,
        )  # fmt: skip
        for path in self.store.partial_paths(self.id):
            path.unlink(missing_ok=True)
        self.row = self.store.existing_batch(self.id)
        return "validating"

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
        bounds = await asyncio.to_thread(cut_chunks, path, self._max_line_bytes, chunk_size(total))
        if not self.store.add_chunks(self.id, bounds, total):
            return self._current_status()
        log.info(
            "batch %s: %d requests to %s in %d chunks",
            self.id,
            total,
            self.row["endpoint"],
            len(bounds),
        )
        self.service.wake()
        return "in_progress"

    def _current_status(self) -> str:
        status: str = self.store.existing_batch(self.id)["status"]
        return status

    # -- cancelled, expired ---------------------------------------------------------------

    async def _take_chunks(self) -> None:
        """Wait until every unfinished chunk is this process's and none runs: the processes
        running them (this one too) stop within `_STATUS_POLL_S` of seeing the batch end and
        give them back; a dead one's leases lapse. Nothing is written to a chunk after
        that."""
        while self.service.running_chunks(self.id) or not self.store.take_chunks(
            self.id, self.service.owner, LEASE_S
        ):
            await asyncio.sleep(_TAKE_WAIT_S)

    async def _expire_rest(self) -> None:
        """The lines not run yet go to their chunk's error file as `batch_expired`."""
        await self._take_chunks()
        path = self._input_path()
        guard = self._guard()
        for chunk in self.store.chunks(self.id):
            if chunk["status"] == "done":
                continue
            rest: list[tuple[int, str | None]] = []
            if path is not None:
                rest = await asyncio.to_thread(self._unrun, path, chunk)
            with self._part_files(chunk, guard) as results:
                for number, custom_id in rest:
                    results.add_failure(
                        number,
                        custom_id,
                        "batch_expired",
                        "the batch expired before this request was run",
                    )
            self.store.finish_chunk(self.id, chunk["chunk"], self.service.owner)

    def _unrun(self, path: Path, chunk: Row) -> list[tuple[int, str | None]]:
        rest = []
        lines = bounded_lines(path, self._max_line_bytes, chunk["first_byte"], chunk["first_line"])
        for number, raw in lines:
            if number >= chunk["end_line"]:
                break
            if number >= chunk["next_line"]:
                rest.append((number, custom_id_of(raw)))
        lines.close()
        return rest

    # -- final ----------------------------------------------------------------------------

    async def _finish(self, status: str) -> None:
        """Join the chunks' parts, as recorded, in chunk order into the batch's output and
        error files; publish them; end the batch with the chunks' counts. Done again from the
        start if this process dies on the way (the parts stay until the batch has ended)."""
        chunks = self.store.chunks(self.id)
        out_path, err_path = self.store.partial_paths(self.id)
        parts = [
            (self.store.part_paths(self.id, c["chunk"]), (c["out_bytes"], c["err_bytes"]))
            for c in chunks
        ]
        await asyncio.to_thread(_join, parts, (out_path, err_path))
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
        counts: dict[str, Any] = {}
        if chunks:
            counts = {
                "completed": sum(c["completed"] for c in chunks),
                "failed": sum(c["failed"] for c in chunks),
            }
        self.store.set_status(self.id, status, **counts)
        for (output, errors), _sizes in parts:
            output.unlink(missing_ok=True)
            errors.unlink(missing_ok=True)
        self.store.forget_chunks(self.id)
        row = self.store.existing_batch(self.id)
        log.info(
            "batch %s %s: %d completed, %d failed", self.id, status, row["completed"], row["failed"]
        )


class ChunkJob(_BatchWork):
    """One chunk of a running batch, from its recorded line to its end, under this process's
    lease on the chunk. Up to `LINES_IN_FLIGHT` lines of this process run at once; results
    are written and recorded in line order."""

    def __init__(self, service: BatchService, app: BatchApp, pacer: BatchPacer, chunk: Row):
        super().__init__(service, app, pacer, chunk["batch_id"])
        self.chunk = chunk
        self.number: int = chunk["chunk"]
        self.batch_id: str = chunk["batch_id"]
        self.name = f"batch {self.id} chunk {self.number}"
        self.unstarted: int = chunk["lines"] - chunk["completed"] - chunk["failed"]
        self.running: set[asyncio.Task[None]] = set()
        self._checked_at = 0.0

    def _renew(self) -> bool:
        return bool(self.store.renew_chunks(self.id, self.service.owner, LEASE_S, self.number))

    def _release(self) -> None:
        self.store.release_chunk(self.id, self.number, self.service.owner)

    async def _work(self) -> None:
        path = self._input_path()
        if path is None:
            self._fail(
                "input_file_missing", f"the input file {self.row['input_file_id']} was deleted"
            )
            return
        if await self._run_lines(path) is not None:
            return  # given back (run): resumed by whichever process claims it next
        owner = self.service.owner
        finished = self.store.finish_chunk(self.id, self.number, owner)
        if finished and self.store.try_finalize(self.id, owner, LEASE_S):
            self.service.wake()  # this process joins the parts

    async def _run_lines(self, path: Path) -> str | None:
        """Run the chunk's lines not recorded yet; None once all are recorded, else why it
        stopped ("cancelling", "expired", "ended", "error")."""
        chunk = self.chunk
        endpoint = self.row["endpoint"]
        call = endpoint_for(self.app, endpoint)
        # The lines are the owner's requests: they use its partition of the embedding cache.
        owner = Tenant(name=self.row["owner"])
        errors: list[BaseException] = []
        order: deque[int] = deque()  # lines started, in line order, not yet written
        ready: dict[int, LineResult] = {}

        def finished(task: asyncio.Task[None]) -> None:
            self.running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())  # type: ignore[arg-type]

        traces = self.app.state["tracing"]
        guard = self._guard()
        with self._part_files(chunk, guard) as results:

            def land(number: int, result: LineResult) -> None:
                """Write the results that are next in line order."""
                ready[number] = result
                while order and order[0] in ready:
                    line = order.popleft()
                    results.add(line, ready.pop(line))

            async def one(number: int, raw: bytes | Oversize) -> None:
                current_tenant.set(owner)  # in this line's task only
                if isinstance(raw, Oversize):
                    result = _oversize(number, raw, self._max_line_bytes)
                else:
                    with (
                        chunk_span(traces, "batch line", batch=self.id, line=number) as span,
                        background(self.pacer),
                    ):
                        result = await run_line(self.app, endpoint, call, raw, number)
                        annotate(span, ok=result.ok, tokens=result.tokens)
                land(number, result)

            stop = None
            try:
                lines = lines_off_loop(
                    path, self._max_line_bytes, chunk["first_byte"], chunk["first_line"]
                )
                async with contextlib.aclosing(lines):
                    async for number, raw in lines:
                        if number >= chunk["end_line"]:
                            break
                        if number < chunk["next_line"]:
                            continue
                        stop = await self._wait_turn(errors)
                        if stop is not None:
                            break
                        guard.check_room()
                        order.append(number)
                        task = asyncio.create_task(one(number, raw))
                        self.running.add(task)
                        task.add_done_callback(finished)
                        self.unstarted -= 1
                        if self.unstarted == LINES_IN_FLIGHT - 1:
                            self.service.wake()  # room to take another chunk
                while self.running and stop is None:
                    stop = await self._wait_turn(errors, until_empty=True)
            finally:
                for task in list(self.running):
                    task.cancel()
                await asyncio.gather(*self.running, return_exceptions=True)
            if errors:  # a line's result could not be stored: stop here, resume later
                raise errors[0]
        return stop

    async def _wait_turn(
        self, errors: list[BaseException], until_empty: bool = False
    ) -> str | None:
        """Wait until a line may start (or, `until_empty`, all have finished); returns why
        the chunk should stop instead, if it should."""
        while True:
            stop = "error" if errors else self._stop_reason()
            if stop is not None:
                return stop
            room = self.service.lines_in_flight < LINES_IN_FLIGHT
            if not self.running or (not until_empty and room):
                return None
            await asyncio.wait(
                set(self.running), timeout=_STATUS_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )

    def _stop_reason(self) -> str | None:
        if time.monotonic() - self._checked_at >= _STATUS_POLL_S:
            # A cancel, through any process, is a status change in the shared database.
            self._checked_at = time.monotonic()
            self.row = self.store.existing_batch(self.id)
        if self.row["status"] == "cancelling":
            return "cancelling"
        if self.row["status"] != "in_progress":
            return "ended"
        if time.time() >= self.row["expires_at"]:
            return "expired"
        return None


def _join(parts: list[tuple[tuple[Path, Path], tuple[int, int]]], into: tuple[Path, Path]) -> None:
    """Each chunk's output and error parts, up to their recorded lengths, one after the
    other into the two files `into`."""
    for side, target in enumerate(into):
        with result_files.open_private(target, 0) as joined:
            for paths, sizes in parts:
                if sizes[side] == 0:
                    continue
                with paths[side].open("rb") as part:
                    left = sizes[side]
                    while left > 0 and (block := part.read(min(left, 1 << 20))):
                        joined.write(block)
                        left -= len(block)
                if left:
                    raise OSError(f"{paths[side]} is shorter than its recorded {sizes[side]} bytes")


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
