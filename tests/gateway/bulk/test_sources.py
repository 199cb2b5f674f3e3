"""Input files: formats, fields, row numbering, skipping to a row, counting and hashing."""

from __future__ import annotations

import hashlib
import io
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.bulk import BulkError
from gateway.bulk.sources import MAX_DOCUMENT_CHARS, Source, input_format, open_source


def source(
    path: Path,
    fmt: str,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> Source:
    return open_source(
        str(path),
        fmt,
        text_field=text_field,
        id_field=id_field,
        spool=path.parent / "spool",
        max_chars=max_chars,
    )


def test_text_lines_are_documents_blank_ones_too(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"first\r\n\nthird\rstill third\nlast")  # no final newline
    got = source(path, "text")
    assert got.documents == 4
    assert list(got.records()) == [(0, "first"), (1, ""), (2, "third\rstill third"), (3, "last")]
    assert list(got.records(2)) == [(2, "third\rstill third"), (3, "last")]
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_jsonl_fields_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"body": "a", "key": 7}\n\n{"body": "b", "key": "x"}\n{"body": "c", "key": 9}\n'
    )
    got = source(path, "jsonl", text_field="body", id_field="key")
    assert got.documents == 3
    assert list(got.records()) == [("7", "a"), ("x", "b"), ("9", "c")]
    assert list(got.records(1)) == [("x", "b"), ("9", "c")]


def test_jsonl_row_without_the_text_field_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"txt": "b"}\n')
    with pytest.raises(BulkError, match=r"line 3 has no field 'text'.*--text-field"):
        list(source(path, "jsonl").records())


def test_csv_columns_with_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,text\n1,"one\nline two"\n2,plain\n')
    got = source(path, "csv", id_field="id")
    assert got.documents == 2
    assert list(got.records()) == [("1", "one\nline two"), ("2", "plain")]
    assert list(got.records(1)) == [("2", "plain")]


def test_csv_without_the_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,body\n1,a\n")
    with pytest.raises(BulkError, match=r"no column 'text' \(columns: \['id', 'body'\]\)"):
        source(path, "csv")


def test_parquet_column_and_skipping_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    texts = [f"doc {i}" for i in range(10_000)]
    pq.write_table(
        pa.table({"content": texts, "n": list(range(10_000))}), path, row_group_size=3000
    )
    got = source(path, "parquet", text_field="content", id_field="n")
    assert got.documents == 10_000
    assert list(got.records(4095))[:2] == [("4095", "doc 4095"), ("4096", "doc 4096")]
    assert [text for _, text in got.records()] == texts


def test_stdin_is_spooled_then_read_like_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\nb\n")))
    got = open_source("-", "text", text_field="text", id_field=None, spool=tmp_path / "spool")
    assert (got.documents, list(got.records())) == (2, [(0, "a"), (1, "b")])


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.txt", "text"),
        ("a.JSONL", "jsonl"),
        ("a.csv", "csv"),
        ("a.parquet", "parquet"),
        ("-", "text"),
    ],
)
def test_format_from_suffix(name: str, fmt: str) -> None:
    assert input_format(name, None) == fmt


def test_unknown_suffix_asks_for_the_format() -> None:
    with pytest.raises(BulkError, match="--input-format"):
        input_format("a.dat", None)


def peak_bytes_reading(got: Source) -> int:
    """The most memory reading every record took (BulkError expected)."""
    tracemalloc.start()
    try:
        with pytest.raises(BulkError):
            list(got.records())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_unbalanced_csv_quote_stops_at_the_field_limit_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,text\n1,fine\n2,"never closed\n' + "more text\n" * 1000)
    with pytest.raises(BulkError, match=r"row 2 \(up to line \d+\) has a field longer than "):
        source(path, "csv", max_chars=200)
    assert source(path, "csv", max_chars=20_000).documents == 2


def test_a_csv_field_over_the_bound_is_refused_when_reading_too(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text\n1,fine\n2," + "x" * 300 + "\n")
    got = source(path, "csv", max_chars=1000)
    with pytest.raises(BulkError, match=r"row 2 .*longer than --max-document-chars \(200"):
        list(replace(got, max_chars=200).records())


@pytest.mark.parametrize(
    "fmt, line", [("text", b"x" * 8_000_000), ("jsonl", b'{"text": "' + b"x" * 8_000_000 + b'"}')]
)
def test_a_long_line_costs_at_most_the_bound_to_refuse(
    tmp_path: Path, fmt: str, line: bytes
) -> None:
    path = tmp_path / f"d.{fmt}"
    short = b"short\n" if fmt == "text" else b'{"text": "short"}\n'
    path.write_bytes(short + short + line + b"\n" + short)
    got = source(path, fmt, max_chars=1000)
    with pytest.raises(BulkError, match=r"line 3 is longer than \d[\d,]* bytes"):
        list(got.records())
    assert peak_bytes_reading(got) < 1_000_000


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_a_text_over_the_bound_names_its_line(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"d.{fmt}"
    text = "y" * 1001
    path.write_text(
        "a\n" + text + "\n" if fmt == "text" else f'{{"text": "a"}}\n{{"text": "{text}"}}\n'
    )
    got = source(path, fmt, max_chars=1000)
    with pytest.raises(
        BulkError,
        match=r"line 2 has a text of 1,001 characters, more than --max-document-chars \(1,000\)",
    ):
        list(got.records())
    assert [t for _, t in replace(got, max_chars=1001).records()] == ["a", text]


def test_parquet_text_over_the_bound_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b" * 50]}), path)
    with pytest.raises(BulkError, match=r"row 2 has a text of 50 characters"):
        list(source(path, "parquet", max_chars=49).records())


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"fine\n" * 3000 + b"caf\xe9\nfine\n")
    with pytest.raises(
        BulkError, match=r"line 3001 is not UTF-8 \(byte 0xe9 at byte 4 of the line\)"
    ):
        list(source(path, "text").records())


def test_csv_that_is_not_utf8_is_refused_before_any_work_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"id,text\n1,fine\n2,caf\xe9\n")
    with pytest.raises(BulkError, match=r"line 3 is not UTF-8"):
        source(path, "csv")


def test_a_damaged_parquet_page_mid_file_names_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"text": [f"doc {i} " + "x" * 50 for i in range(20_000)]}),
        path,
        row_group_size=5000,
    )
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    first = column.dictionary_page_offset or column.data_page_offset
    damaged = bytearray(path.read_bytes())
    damaged[first + 10 : first + column.total_compressed_size - 10] = b"\xab" * (
        column.total_compressed_size - 20
    )
    path.write_bytes(damaged)
    got = source(path, "parquet")
    assert got.documents == 20_000  # the footer is whole
    with pytest.raises(BulkError, match=r"cannot read the rows from row \d+ on: \S"):
        list(got.records())
