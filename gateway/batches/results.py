"""Where a batch's line results go: appended to its partial output or error file and
recorded in the store, under two bounds checked before each write.

- `--batch-max-output-bytes`: the output and error files together may not grow past it.
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
    """A running batch's partial output and error files, and its records in the store."""

    def __init__(
        self, store: Store, batch_id: str, out: BinaryIO, err: BinaryIO, guard: SpaceGuard
    ) -> None:
        self.store = store
        self.batch_id = batch_id
        self.out = out
        self.err = err
        self.guard = guard

    def add(self, number: int, result: LineResult) -> None:
        """Write and record one line's result. Nothing here awaits: a line and its record
        land together, and no other line writes in between."""
        self.guard.check_write(self.out.tell() + self.err.tell(), len(result.line))
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

    def _record(self, number: int, ok: bool, tokens: int) -> None:
        self.store.record_line(
            self.batch_id,
            number,
            ok=ok,
            tokens=tokens,
            out_bytes=self.out.tell(),
            err_bytes=self.err.tell(),
        )

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
