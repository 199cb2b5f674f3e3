"""Input files as numbered (id, text) records, read lazily, and their fingerprint.

Row numbers are the order documents appear in the file, from 0: a text file's line i+1, a
JSONL file's i-th non-blank line, a CSV or Parquet file's i-th row. Without an id field a
document's id is its row number; with one it is the field's value as a string, so that one
output column has one type whatever the input mixes.

A document has at most `max_chars` characters, and reading is bounded to match, so that a
malformed file (a missing newline, an unbalanced CSV quote) costs that much memory, not the
file's size: lines are read `readline(limit)` at a time (a text line: 4 bytes per character,
UTF-8's most; a JSONL or CSV line: `_LINE_BYTES_PER_CHAR`, room for the text however it is
escaped and the other fields), and the csv module's field limit is `max_chars`. What cannot be
read (too long, not UTF-8, not JSON, a damaged Parquet page) is a `BulkError` naming the line
or row.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import shutil
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
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
# The longest document by default (`--max-document-chars`): a long book, well past what any
# embedding model's window keeps when truncating; a line then costs at most 64 MiB to read.
MAX_DOCUMENT_CHARS = 1 << 23
# Bytes a JSONL or CSV line may have per character of `max_chars`: a text escaped as \uXXXX
# takes 6 per character, and the line holds the id and other fields too.
_LINE_BYTES_PER_CHAR = 8

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
    max_chars: int = MAX_DOCUMENT_CHARS

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
        with self.path.open("rb") as file:
            lines = _bounded_lines(self.path, file, 4 * self.max_chars + 1)  # + the "\r" of "\r\n"
            for row, (number, line) in enumerate(itertools.islice(lines, start, None), start):
                text = _decode(self.path, line, number).removesuffix("\n").removesuffix("\r")
                yield row, self._checked(text, f"line {number}")

    def _jsonl_rows(self, start: int) -> Generator[Record, None, None]:
        with self.path.open("rb") as file:
            lines = _bounded_lines(self.path, file, _LINE_BYTES_PER_CHAR * self.max_chars)
            numbered = ((n, line) for n, line in lines if line.strip())
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
        with self.path.open("rb") as file:
            reader = _csv_reader(self.path, file, self.max_chars)
            for row, item in enumerate(itertools.islice(reader, start, None), start):
                yield self._record(row, item, f"row {row + 1}")

    def _parquet_rows(self, start: int) -> Generator[Record, None, None]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        batches = pq.ParquetFile(self.path).iter_batches(batch_size=4096, columns=columns)
        row = 0
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:  # a damaged page: OSError, ArrowInvalid
                raise BulkError(
                    f"{self.path}: cannot read the rows from row {row + 1} on: {_first_line(exc)}"
                ) from exc
            if batch is None:
                return
            if row + batch.num_rows > start:
                skip = max(start - row, 0)
                for offset, item in enumerate(batch.slice(skip).to_pylist()):
                    yield self._record(row + skip + offset, item, f"row {row + skip + offset + 1}")
            row += batch.num_rows

    def _checked(self, text: str, where: str) -> str:
        if len(text) > self.max_chars:
            raise BulkError(
                f"{self.path}: {where} has a text of {len(text):,} characters, more than "
                f"--max-document-chars ({self.max_chars:,})"
            )
        return text

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
        self._checked(text, where)
        if self.id_field is None:
            return row, text
        if item.get(self.id_field) is None:
            raise BulkError(f"{self.path}: {where} has no id in the field {self.id_field!r}")
        return str(item[self.id_field]), text


def open_source(
    path: str,
    fmt: str,
    *,
    text_field: str,
    id_field: str | None,
    spool: Path,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> Source:
    """Check the file, count its documents and hash it. stdin (`-`) is first copied to
    `spool`, so that it can be hashed, counted and read like a file. A CSV file is parsed
    whole here, so its too-long fields and bytes that are not UTF-8 are found before any
    engine work."""
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
        documents = _csv_rows(file_path, text_field, id_field, max_chars)
    else:
        documents = _parquet_rows(file_path, text_field, id_field)
    return Source(file_path, fmt, text_field, id_field, documents, sha256, max_chars)


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
    # Block by block, not line by line: a line may be as long as the file.
    lines, content = 0, False  # content: the line so far has a byte other than whitespace
    while block := file.read(_READ_BYTES):
        digest.update(block)
        *ended, rest = block.split(b"\n")
        for part in ended:
            lines += content or bool(part.strip())
            content = False
        content = content or bool(rest.strip())
    return digest.hexdigest(), lines + content


def _csv_rows(path: Path, text_field: str, id_field: str | None, max_chars: int) -> int:
    with path.open("rb") as file:
        reader = _csv_reader(path, file, max_chars)
        _check_columns(path, reader.fieldnames or [], text_field, id_field)
        return sum(1 for _ in reader)


def _csv_reader(path: Path, file: BinaryIO, max_chars: int) -> _CsvRows:
    """The rows of a CSV file as dicts, each field at most `max_chars` characters."""
    # The csv module's limit is process-wide; this command reads one file at a time.
    csv.field_size_limit(max_chars)
    lines = (
        _decode(path, line, number)
        for number, line in _bounded_lines(path, file, _LINE_BYTES_PER_CHAR * max_chars)
    )
    return _CsvRows(path, csv.DictReader(lines), max_chars)


class _CsvRows:
    """A DictReader whose errors (a field past the limit, bad quoting) name the row."""

    def __init__(self, path: Path, reader: csv.DictReader[str], max_chars: int) -> None:
        self.path, self.reader, self.max_chars, self.row = path, reader, max_chars, 0

    @property
    def fieldnames(self) -> Sequence[str] | None:
        names: Sequence[str] | None = self._guarded(lambda: self.reader.fieldnames, "the header")
        return names

    def __iter__(self) -> Iterator[dict[str, str]]:
        return self

    def __next__(self) -> dict[str, str]:
        if self.row == 0:
            self.fieldnames  # noqa: B018 (reads the header, so that its errors name it)
        item: dict[str, str] = self._guarded(lambda: next(self.reader), f"row {self.row + 1}")
        self.row += 1
        return item

    def _guarded(self, read: Callable[[], Any], where: str) -> Any:
        try:
            return read()
        except csv.Error as exc:
            problem = (
                f"has a field longer than --max-document-chars ({self.max_chars:,} characters)"
                if "field larger than field limit" in str(exc)
                else f"is not valid CSV ({exc})"
            )
            raise BulkError(
                f"{self.path}: {where} (up to line {self.reader.line_num}) {problem}"
            ) from exc


def _bounded_lines(path: Path, file: BinaryIO, most: int) -> Iterator[tuple[int, bytes]]:
    """Each line (with its "\n") and its number from 1; a line of more than `most` bytes is
    refused after reading `most` + 1 of them."""
    for number in itertools.count(1):
        line = file.readline(most + 1)
        if not line:
            return
        if len(line) > most and not line.endswith(b"\n"):
            raise BulkError(
                f"{path}: line {number} is longer than {most:,} bytes, the most a line may "
                "have for --max-document-chars"
            )
        yield number, line


def _decode(path: Path, line: bytes, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BulkError(
            f"{path}: line {number} is not UTF-8 (byte {line[exc.start]:#04x} at byte "
            f"{exc.start + 1} of the line); convert the file to UTF-8"
        ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0]


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
