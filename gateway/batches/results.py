"""Where a batch's line results go: appended to its partial output or error file and
recorded in the store, under two bounds checked before each write.

- `--batch-max-output-bytes`: the output and error files together may not grow past it,
  counted across the batch's chunks in the store (each record returns the batch's total).
  Identical inputs are embedded once and answered once each, so 31 KB of input can ask for
  30 MB of vectors; past the cap the batch fails with `output_too_large`.
- `--batch-min-free-bytes`: below it the batch pauses (`DiskLow`): the runner stops it where
  it stands, and resumes it once there is room again.

A line whose write or record fails (a disk or database error) is not dropped: its partial
write is cut off and it goes to the error file as `internal_error`. If that fails too, the
error stops the batch (`Job` in runner.py), which resumes later from what was recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gateway.batches.lines import LineResult, failure_line
from gateway.batches.store import STORAGE_ERRORS, Store

log = logging.getLogger(__name__)


class DiskLow(Exception):
    """Free space on the batch folder's disk is below --batch-min-free-bytes."""


class OutputTooLarge(Exception):
    """A batch's results would pass --batch-max-output-bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(
            f"the batch's output and error files would pass {cap} bytes "
            f"(--batch-max-output-bytes); split the input file into smaller batches, or ask "
            f'for fewer or smaller vectors per request (for example "encoding_format": '
            f'"base64")'
        )


class SpaceGuard:
    """The two bounds, checked before a line starts and before its result is written."""

    def __init__(
        self, root: Path, min_free: int, max_output: int, free: Callable[[Path], int] | None = None
    ) -> None:
        self.root = root
        self.min_free = min_free
        self.max_output = max_output
        self.free = free or free_bytes

    def check_room(self, incoming: int = 0) -> None:
        free = self.free(self.root)
        if free - incoming < self.min_free:
            raise DiskLow(
                f"{free} bytes free on the batch folder's disk, under "
                f"--batch-min-free-bytes ({self.min_free}): batches are paused"
            )

    def check_write(self, written: int, incoming: int) -> None:
        if written + incoming > self.max_output:
            raise OutputTooLarge(self.max_output)
        self.check_room(incoming)


class ResultFiles:
    """One chunk of a running batch: its partial output and error files, and its records in
    the store (under `owner`'s lease). `written`: the bytes of results the whole batch held
    when the chunk was taken, across every process's chunks; each record brings it up to
    date, so the output cap counts the batch, not the chunk."""

    def __init__(
        self,
        store: Store,
        batch_id: str,
        chunk: tuple[int, str],
        files: tuple[BinaryIO, BinaryIO],
        guard: SpaceGuard,
        written: int,
    ) -> None:
        self.store = store
        self.batch_id = batch_id
        self.chunk, self.owner = chunk
        self.out, self.err = files
        self.guard = guard
        self.written = written
        self._recorded = self.out.tell(), self.err.tell()

    def add(self, number: int, result: LineResult) -> None:
        """Write and record one line's result. Nothing here awaits: a line and its record
        land together, and no other line writes in between."""
        self.guard.check_write(self.written + self._unrecorded(), len(result.line))
        marks = self.out.tell(), self.err.tell()
        try:
            self._write(self.out if result.ok else self.err, result.line)
            self._record(number, result.ok, result.tokens)
        except STORAGE_ERRORS:
            log.warning(
                "batch %s: line %d's result could not be stored; it goes to the error file",
                self.batch_id,
                number,
                exc_info=True,
            )
            self._rewind(*marks)
            line = failure_line(
                result.custom_id,
                "internal_error",
                "the server could not store this request's result",
            )
            self._write(self.err, line)
            self._record(number, False, 0)

    def add_failure(self, number: int, custom_id: str | None, code: str, message: str) -> None:
        self._write(self.err, failure_line(custom_id, code, message))
        self._record(number, False, 0)

    def _write(self, file: BinaryIO, line: bytes) -> None:
        file.write(line)
        file.flush()

    def _unrecorded(self) -> int:
        return self.out.tell() + self.err.tell() - sum(self._recorded)

    def _record(self, number: int, ok: bool, tokens: int) -> None:
        sizes = self.out.tell(), self.err.tell()
        self.written = self.store.record_line(
            self.batch_id,
            number,
            chunk=self.chunk,
            owner=self.owner,
            ok=ok,
            tokens=tokens,
            out_bytes=sizes[0],
            err_bytes=sizes[1],
            grown=(sizes[0] - self._recorded[0], sizes[1] - self._recorded[1]),
        )
        self._recorded = sizes
        if self.written > self.guard.max_output:
            # Other processes' chunks grew the batch since this one last looked: the check
            # before the write saw less than there is.
            raise OutputTooLarge(self.guard.max_output)

    def _rewind(self, out_size: int, err_size: int) -> None:
        for file, size in ((self.out, out_size), (self.err, err_size)):
            file.truncate(size)
            file.seek(size)


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def open_private(path: Path, size: int) -> BinaryIO:
    """`path` opened for appending, cut back to `size`; created readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    file = os.fdopen(fd, "ab")
    file.truncate(size)
    file.seek(size)
    return file
