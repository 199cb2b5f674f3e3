"""The final output, assembled from the committed chunks once every row is in.

- `.npy`: a float32 matrix, row i = document i (NumPy's own format; no ids).
- `.parquet`: columns `id` (row number, or the --id-field value as a string) and `vector`
  (fixed-size list of float32), via pyarrow.
- `.jsonl`: one `{"id": ..., "embedding": [...]}` per line, in row order.

Written to a temporary file beside the target, fsync'd and renamed, so the output is either
absent or whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.bulk import BulkError

FORMATS = ("npy", "parquet", "jsonl")
_BY_SUFFIX = {
    ".npy": "npy",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def output_format(path: str, given: str | None) -> str:
    if given:
        return given
    found = _BY_SUFFIX.get(Path(path).suffix.lower())
    if found is None:
        raise BulkError(
            f"cannot tell the output format of {path} from its suffix; name it "
            f".npy, .parquet or .jsonl, or pass --output-format"
        )
    return found


def write(tables: Iterable[Any], fmt: str, path: Path, *, rows: int, dimension: int) -> None:
    """Write the chunks (Arrow tables with `id` and `vector`) to `path`, atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    {"npy": _npy, "parquet": _parquet, "jsonl": _jsonl}[fmt](tables, temporary, rows, dimension)
    with temporary.open("rb+") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


def vectors_of(table: Any) -> npt.NDArray[np.float32]:
    """A chunk's `vector` column as an n x dimension float32 matrix (no copy when possible)."""
    column = table.column("vector").combine_chunks()
    matrix: npt.NDArray[np.float32] = (
        column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    )
    return matrix


def _npy(tables: Iterable[Any], path: Path, rows: int, dimension: int) -> None:
    # numpy ships open_memmap without annotations.
    matrix = np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
        path, mode="w+", dtype="<f4", shape=(rows, dimension)
    )
    row = 0
    for table in tables:
        matrix[row : row + table.num_rows] = vectors_of(table)
        row += table.num_rows
    if row != rows:
        raise BulkError(f"internal error: the chunks hold {row} rows, expected {rows}")
    matrix.flush()
    del matrix


def _parquet(tables: Iterable[Any], path: Path, rows: int, dimension: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is None:  # no documents: an empty file with the columns
            empty = pa.table(
                {
                    "id": pa.array([], pa.int64()),
                    "vector": pa.array([], pa.list_(pa.float32(), dimension)),
                }
            )
            writer = pq.ParquetWriter(path, empty.schema)
            writer.write_table(empty)
    finally:
        if writer is not None:
            writer.close()


def _jsonl(tables: Iterable[Any], path: Path, rows: int, dimension: int) -> None:
    with path.open("wb") as file:
        for table in tables:
            ids, vectors = table.column("id").to_pylist(), vectors_of(table)
            # orjson writes float32 values in their shortest form, which reads back exactly.
            file.write(
                b"".join(
                    orjson.dumps(
                        {"id": doc_id, "embedding": vector}, option=orjson.OPT_SERIALIZE_NUMPY
                    )
                    + b"\n"
                    for doc_id, vector in zip(ids, vectors)
                )
            )
