"""The final output, assembled from the committed chunks once every row is in.

- `.npy`: a matrix of the output dtype, row i = document i (NumPy's own format; no ids).
- `.parquet`: columns `id` (row number, or the --id-field value as a string) and `vector`
  (fixed-size list of the output dtype), via pyarrow.
- `.jsonl`: one `{"id": ..., "embedding": [...]}` per line, in row order (integers for the
  integer dtypes).

The chunks hold float32 vectors; the output dtype (`DTYPES`) is applied as they are written:
float32 as they are, float16 rounded, and int8, uint8, binary, ubinary as the API quantises
(`gateway.serving.quantize`: d columns, or ceil(d / 8) packed bytes for binary and ubinary,
int8 for binary, uint8 for ubinary).

Written to a temporary file beside the target, fsync'd and renamed, so the output is either
absent or whole. The temporary file is made by `tempfile.mkstemp` (a new name, O_EXCL, mode
0600 until it is whole), so a link planted beside the target in a shared folder is never
followed, and it is removed when writing fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.bulk import BulkError
from gateway.serving.quantize import quantize

FORMATS = ("npy", "parquet", "jsonl")
DTYPES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
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


def write(
    tables: Iterable[Any],
    fmt: str,
    path: Path,
    *,
    rows: int,
    dimension: int,
    dtype: str = "float32",
) -> None:
    """Write the chunks (Arrow tables with `id` and float32 `vector`) to `path` as `dtype`,
    atomically."""
    write_as = {"npy": _npy, "parquet": _parquet, "jsonl": _jsonl}[fmt]
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        os.close(descriptor)  # each format opens the file (the new one, by its new name)
        write_as(tables, temporary, rows, dimension, dtype)
        with temporary.open("rb+") as file:
            os.fchmod(file.fileno(), 0o666 & ~_umask())  # as a file opened for writing gets
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def convert(vectors: npt.NDArray[np.float32], dtype: str) -> np.ndarray:
    """Float32 rows as the output `dtype`."""
    if dtype == "float32":
        return vectors
    if dtype == "float16":
        return vectors.astype("<f2")
    return quantize(vectors, dtype)


def _shape_of(dimension: int, dtype: str) -> tuple[np.dtype, int]:
    """The numpy type and the number of columns of `dtype` rows of `dimension` floats."""
    row = convert(np.zeros((1, dimension), dtype=np.float32), dtype)
    return row.dtype, row.shape[1]


def vectors_of(table: Any) -> npt.NDArray[np.float32]:
    """A chunk's `vector` column as an n x dimension float32 matrix (no copy when possible)."""
    column = table.column("vector").combine_chunks()
    matrix: npt.NDArray[np.float32] = (
        column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    )
    return matrix


def _npy(tables: Iterable[Any], path: Path, rows: int, dimension: int, dtype: str) -> None:
    kind, columns = _shape_of(dimension, dtype)
    # numpy ships open_memmap without annotations.
    matrix = np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
        path, mode="w+", dtype=kind, shape=(rows, columns)
    )
    row = 0
    for table in tables:
        matrix[row : row + table.num_rows] = convert(vectors_of(table), dtype)
        row += table.num_rows
    if row != rows:
        raise BulkError(f"internal error: the chunks hold {row} rows, expected {rows}")
    matrix.flush()
    del matrix


def _parquet(tables: Iterable[Any], path: Path, rows: int, dimension: int, dtype: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in tables:
            if dtype != "float32":
                matrix = convert(vectors_of(table), dtype)
                vector = pa.FixedSizeListArray.from_arrays(
                    pa.array(matrix.reshape(-1)), matrix.shape[1]
                )
                table = table.set_column(table.schema.get_field_index("vector"), "vector", vector)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is None:  # no documents: an empty file with the columns
            kind, columns = _shape_of(dimension, dtype)
            empty = pa.table(
                {
                    "id": pa.array([], pa.int64()),
                    "vector": pa.array([], pa.list_(pa.from_numpy_dtype(kind), columns)),
                }
            )
            writer = pq.ParquetWriter(path, empty.schema)
            writer.write_table(empty)
    finally:
        if writer is not None:
            writer.close()


def _jsonl(tables: Iterable[Any], path: Path, rows: int, dimension: int, dtype: str) -> None:
    with path.open("wb") as file:
        for table in tables:
            ids, vectors = table.column("id").to_pylist(), convert(vectors_of(table), dtype)
            # orjson writes float32 (float16) values in their shortest form, which reads back
            # exactly, and integers as integers.
            file.write(
                b"".join(
                    orjson.dumps(
                        {"id": doc_id, "embedding": vector}, option=orjson.OPT_SERIALIZE_NUMPY
                    )
                    + b"\n"
                    for doc_id, vector in zip(ids, vectors)
                )
            )
