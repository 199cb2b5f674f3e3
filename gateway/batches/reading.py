"""Reading a batch input file without trusting its lines: each line is read up to the
request body limit (`--max-body-bytes`, what the same request over HTTP may carry), a longer
one is skipped in small reads and reported by its size, never held whole; and the reading
happens in a thread, so a 200 MiB file does not hold up the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

_SKIP_READ = 1 << 20
# Lines handed from the reading thread to the loop per call: enough to keep LINES_IN_FLIGHT
# lines fed, few enough that a file of large lines holds only a few MiB at a time.
_TAKE_LINES = 64
_TAKE_BYTES = 4 << 20


@dataclass(frozen=True)
class Oversize:
    """A line longer than the limit: not read, only measured."""

    size: int


Line = tuple[int, bytes | Oversize]


def bounded_lines(
    path: Path, max_bytes: int, start: int = 0, first: int = 1
) -> Generator[Line, None, None]:
    """(1-based line number, line) for every non-blank line, numbered as `read_lines`
    numbers them; a line over `max_bytes` (newline not counted) is an `Oversize`. From byte
    `start`, where line `first` begins (a chunk's first line: `cut_chunks`)."""
    with path.open("rb") as file:
        file.seek(start)
        for number, _offset, line in _numbered(file, max_bytes, first):
            yield number, line


def _numbered(
    file: BinaryIO, max_bytes: int, first: int
) -> Iterator[tuple[int, int, bytes | Oversize]]:
    """(line number, byte offset, line) of every non-blank line from the file's position."""
    number = first - 1
    offset = file.tell()
    while line := file.readline(max_bytes + 1):
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            size = len(line)
            while not line.endswith(b"\n") and (line := file.readline(_SKIP_READ)):
                size += len(line)
            yield number, offset, Oversize(size - line.endswith(b"\n"))
        elif line.strip():
            yield number, offset, line
        offset = file.tell()


def count_lines(path: Path, max_bytes: int) -> int:
    return sum(1 for _ in bounded_lines(path, max_bytes))


@dataclass(frozen=True)
class ChunkBounds:
    """Lines `first_line` up to (not including) `end_line` of an input file, `lines` of
    them requests; `first_byte` is where `first_line` starts."""

    first_line: int
    end_line: int
    first_byte: int
    lines: int


def cut_chunks(path: Path, max_bytes: int, size: int) -> list[ChunkBounds]:
    """The input file's requests in chunks of `size` (the last may be shorter)."""
    starts: list[tuple[int, int]] = []
    total = last = 0
    with path.open("rb") as file:
        for number, offset, _line in _numbered(file, max_bytes, 1):
            if total % size == 0:
                starts.append((number, offset))
            total, last = total + 1, number
    ends = [number for number, _ in starts[1:]] + [last + 1]
    counts = [size] * (len(starts) - 1) + [total - size * (len(starts) - 1)]
    return [
        ChunkBounds(first, end, offset, count)
        for (first, offset), end, count in zip(starts, ends, counts, strict=True)
    ]


async def lines_off_loop(
    path: Path, max_bytes: int, start: int = 0, first: int = 1
) -> AsyncGenerator[Line, None]:
    """`bounded_lines`, read in a thread a few at a time. Use it with contextlib.aclosing."""
    lines = bounded_lines(path, max_bytes, start, first)
    try:
        while batch := await asyncio.to_thread(_take, lines):
            for line in batch:
                yield line
    finally:
        lines.close()


def _take(lines: Iterator[Line]) -> list[Line]:
    batch: list[Line] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line[1]) if isinstance(line[1], bytes) else 0
        if len(batch) >= _TAKE_LINES or size >= _TAKE_BYTES:
            break
    return batch


def custom_id_of(raw: bytes | Oversize) -> str | None:
    """The line's `custom_id`, when it has one that can be read."""
    if isinstance(raw, Oversize):
        return None
    with contextlib.suppress(orjson.JSONDecodeError):
        line = orjson.loads(raw)
        value = line.get("custom_id") if isinstance(line, dict) else None
        return value if isinstance(value, str) else None
    return None
