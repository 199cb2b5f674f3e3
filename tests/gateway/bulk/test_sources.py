"""Input files: formats, fields, row numbering, skipping to a row, counting and hashing."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.bulk import BulkError
from gateway.bulk.sources import input_format, open_source


def source(path: Path, fmt: str, *, text_field: str = "text", id_field: str | None = None):
    return open_source(
        str(path), fmt, text_field=text_field, id_field=id_field, spool=path.parent / "spool"
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
