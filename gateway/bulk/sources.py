"""Input files as numbered (id, text) records, read lazily, and their fingerprint.

Row numbers are the order documents appear in the file, from 0: a text file's line i+1, a
JSONL file's i-th non-blank line, a CSV or Parquet file's i-th row. Without an id field a
document's id is its row number; with one it is the field's value as a string, so that one
output column has one type whatever the input mixes.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import shutil
import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.bulk import BulkError

FORMATS = ("text", "jsonl", "csv", "parquet")
_BY_SUFFIX = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_READ_BYTES = 1 << 20
# A CSV field may be as long as a document (the csv module's default limit is 128 KiB).
csv.field_size_limit(1 << 30)

DocumentId = int | str  # the row number, or the id field's value as a string
Record = tuple[DocumentId, str]


def input_format(path: str, given: str | None) -> str:
    """The format named by `given`, else by the file's suffix; stdin (`-`) defaults to text."""
    if given:
        return given
    if path == "-":
        return "text"
    found = _BY_SUFFIX.get(Path(path).suffix.lower())
    if found is None:
        raise BulkError(
            f"cannot tell the format of {path} from its suffix; pass "
            f"--input-format ({', '.join(FORMATS)})"
        )
    return found


@dataclass(frozen=True)
class Source:
    """One input file: its format, where the text (and id) are, its size and content hash."""

    path: Path
    format: str
    text_field: str
    id_field: str | None
    documents: int
    sha256: str

    def records(self, start: int = 0) -> Generator[Record, None, None]:
        """(id, text) of every document from row `start` on."""
        return {
            "text": self._text_rows,
            "jsonl": self._jsonl_rows,
            "csv": self._csv_rows,
            "parquet": self._parquet_rows,
        }[self.format](start)

    def _text_rows(self, start: int) -> Generator[Record, None, None]:
        # Only "\n" ends a line (a lone "\r" is text), as the scan counted; "\r\n" files lose
        # the "\r". Every line is a document, a blank one too, so row i is always line i+1.
        with self.path.open(encoding="utf-8", newline="\n") as file:
            for row, line in enumerate(itertools.islice(file, start, None), start):
                yield row, line.removesuffix("\n").removesuffix("\r")

    def _jsonl_rows(self, start: int) -> Generator[Record, None, None]:
        with self.path.open("rb") as file:
            numbered = ((n, line) for n, line in enumerate(file, 1) if line.strip())
            for row, (line_number, line) in enumerate(
                itertools.islice(numbered, start, None), start
            ):
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BulkError(f"{self.path}: line {line_number} is not JSON: {exc}") from exc
                if not isinstance(item, dict):
                    raise BulkError(f"{self.path}: line {line_number} is not a JSON object")
                yield self._record(row, item, f"line {line_number}")

    def _csv_rows(self, start: int) -> Generator[Record, None, None]:
        with self.path.open(encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            for row, item in enumerate(itertools.islice(reader, start, None), start):
                yield self._record(row, item, f"row {row + 1}")

    def _parquet_rows(self, start: int) -> Generator[Record, None, None]:
        import pyarrow.parquet as pq

        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        batches = pq.ParquetFile(self.path).iter_batches(batch_size=4096, columns=columns)
        row = 0
        for batch in batches:
            if row + batch.num_rows > start:
                skip = max(start - row, 0)
                for offset, item in enumerate(batch.slice(skip).to_pylist()):
                    yield self._record(row + skip + offset, item, f"row {row + skip + offset + 1}")
            row += batch.num_rows

    def _record(self, row: int, item: dict[str, Any], where: str) -> Record:
        text = item.get(self.text_field)
        if not isinstance(text, str):
            problem = (
                "has no field"
                if self.text_field not in item
                else f"has a {type(text).__name__}, not a string, in the field"
            )
            raise BulkError(
                f"{self.path}: {where} {problem} {self.text_field!r} "
                "(choose the field with --text-field)"
            )
        if self.id_field is None:
            return row, text
        if item.get(self.id_field) is None:
            raise BulkError(f"{self.path}: {where} has no id in the field {self.id_field!r}")
        return str(item[self.id_field]), text


def open_source(
    path: str, fmt: str, *, text_field: str, id_field: str | None, spool: Path
) -> Source:
    """Check the file, count its documents and hash it. stdin (`-`) is first copied to
    `spool`, so that it can be hashed, counted and read like a file."""
    if path == "-":
        with spool.open("wb") as file:
            shutil.copyfileobj(sys.stdin.buffer, file, _READ_BYTES)
        file_path = spool
    else:
        file_path = Path(path)
        if not file_path.is_file():
            raise BulkError(f"input file {path} does not exist")
    with file_path.open("rb") as file:
        sha256, lines = _scan(file, count_blank=fmt != "jsonl")
    if fmt in ("text", "jsonl"):
        documents = lines
    elif fmt == "csv":
        documents = _csv_rows(file_path, text_field, id_field)
    else:
        documents = _parquet_rows(file_path, text_field, id_field)
    return Source(file_path, fmt, text_field, id_field, documents, sha256)


def _scan(file: BinaryIO, *, count_blank: bool) -> tuple[str, int]:
    """The sha256 of the bytes and the number of lines (blank ones only if `count_blank`)."""
    digest = hashlib.sha256()
    if count_blank:
        lines, last = 0, b"\n"
        while block := file.read(_READ_BYTES):
            digest.update(block)
            lines += block.count(b"\n")
            last = block[-1:]
        return digest.hexdigest(), lines + (last != b"\n")
    lines = 0
    for line in file:
        digest.update(line)
        lines += bool(line.strip())
    return digest.hexdigest(), lines


def _csv_rows(path: Path, text_field: str, id_field: str | None) -> int:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        _check_columns(path, reader.fieldnames or [], text_field, id_field)
        return sum(1 for _ in reader)


def _parquet_rows(path: Path, text_field: str, id_field: str | None) -> int:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise BulkError(f"{path} is not a Parquet file: {exc}") from exc
    _check_columns(path, metadata.schema.names, text_field, id_field)
    rows: int = metadata.num_rows
    return rows


def _check_columns(
    path: Path, columns: Sequence[str], text_field: str, id_field: str | None
) -> None:
    for flag, column in (("--text-field", text_field), ("--id-field", id_field)):
        if column is not None and column not in columns:
            raise BulkError(
                f"{path} has no column {column!r} (columns: {columns}); choose one with {flag}"
            )
