"""The final output, assembled from the committed chunks once every row is in.

- `.npy`: a matrix of the output dtype, row i = document i (NumPy's own format; no ids; dense
  vectors only).
- `.parquet`: columns `id` (row number, or the --id-field value as a string) and, for each
  output asked for, `vector` (dense: fixed-size list of the output dtype), `sparse_embedding`
  (struct of `indices`, list of int64, and `values`, list of float32: one column whose rows
  read as the {"indices", "values"} a Qdrant `SparseVector` or a Milvus sparse field takes)
  and `colbert_vecs` (list of fixed-size lists of float32, one per token), via pyarrow.
- `.jsonl`: one `{"id": ..., "embedding": [...], "sparse_embedding": {"indices": [...],
  "values": [...]}, "colbert_vecs": [[...], ...]}` per line (the outputs asked for), in row
  order (integers for the integer dtypes): the field names of /v1/embeddings.

The chunks hold float32 vectors; the output dtype (`DTYPES`) is applied to the dense vectors
as they are written: float32 as they are, float16 rounded, and int8, uint8, binary, ubinary as
the API quantises (`gateway.serving.quantize`: d columns, or ceil(d / 8) packed bytes for
binary and ubinary, int8 for binary, uint8 for ubinary). Sparse and token vectors stay float32.

One chunk is in memory at a time, and JSONL lines are written one at a time from NumPy views
of it, so the memory taken is about one chunk's, however large OUT is.

Written to a temporary file beside the target, fsync'd and renamed, so the output is either
absent or whole. The temporary file is made by `tempfile.mkstemp` (a new name, O_EXCL, mode
0600 until it is whole), so a link planted beside the target in a shared folder is never
followed, and it is removed when writing fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.bulk import BulkError
from gateway.serving.quantize import quantize

FORMATS = ("npy", "parquet", "jsonl")
# What a run may write per document (`--outputs`), as adapters.base.OUTPUTS names them.
KINDS = ("dense", "sparse", "multivector")
# Each one's JSONL field (the Parquet columns are the chunks': `checkpoint.chunk_table`).
FIELDS = {"dense": "embedding", "sparse": "sparse_embedding", "multivector": "colbert_vecs"}
# The formats that take each kind.
TAKEN_BY = {"dense": FORMATS, "sparse": ("parquet", "jsonl"), "multivector": ("parquet", "jsonl")}
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


@dataclass(frozen=True)
class Layout:
    """What OUT holds: the outputs, the widths of the dense and token vectors, the dense dtype."""

    kinds: tuple[str, ...]
    dimension: int
    token_dimension: int
    dtype: str


def write(
    tables: Iterable[Any],
    fmt: str,
    path: Path,
    *,
    rows: int,
    dimension: int,
    dtype: str = "float32",
    kinds: tuple[str, ...] = ("dense",),
    token_dimension: int = 0,
) -> None:
    """Write the chunks (`checkpoint.chunk_table`'s tables: `id` and the columns of `kinds`)
    to `path`, dense vectors as `dtype`, atomically. `dimension` and `token_dimension` give
    an empty output its columns' types."""
    layout = Layout(kinds, dimension, token_dimension, dtype)
    write_as = {"npy": _npy, "parquet": _parquet, "jsonl": _jsonl}[fmt]
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        os.close(descriptor)  # each format opens the file (the new one, by its new name)
        write_as(tables, temporary, rows, layout)
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


def _npy(tables: Iterable[Any], path: Path, rows: int, layout: Layout) -> None:
    kind, columns = _shape_of(layout.dimension, layout.dtype)
    # numpy ships open_memmap without annotations.
    matrix = np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
        path, mode="w+", dtype=kind, shape=(rows, columns)
    )
    row = 0
    for table in tables:
        matrix[row : row + table.num_rows] = convert(vectors_of(table), layout.dtype)
        row += table.num_rows
    if row != rows:
        raise BulkError(f"internal error: the chunks hold {row} rows, expected {rows}")
    matrix.flush()
    del matrix


def _parquet(tables: Iterable[Any], path: Path, rows: int, layout: Layout) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in tables:
            if layout.dtype != "float32" and "dense" in layout.kinds:
                matrix = convert(vectors_of(table), layout.dtype)
                vector = pa.FixedSizeListArray.from_arrays(
                    pa.array(matrix.reshape(-1)), matrix.shape[1]
                )
                table = table.set_column(table.schema.get_field_index("vector"), "vector", vector)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is None:  # no documents: an empty file with the columns
            empty = pa.schema(_empty_columns(layout)).empty_table()
            writer = pq.ParquetWriter(path, empty.schema)
            writer.write_table(empty)
    finally:
        if writer is not None:
            writer.close()


def _empty_columns(layout: Layout) -> list[tuple[str, Any]]:
    import pyarrow as pa

    columns: list[tuple[str, Any]] = [("id", pa.int64())]
    if "dense" in layout.kinds:
        kind, width = _shape_of(layout.dimension, layout.dtype)
        columns.append(("vector", pa.list_(pa.from_numpy_dtype(kind), width)))
    if "sparse" in layout.kinds:
        sparse = pa.struct([("indices", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))])
        columns.append(("sparse_embedding", sparse))
    if "multivector" in layout.kinds:
        row = pa.list_(pa.float32(), layout.token_dimension)
        columns.append(("colbert_vecs", pa.list_(row)))
    return columns


def _jsonl(tables: Iterable[Any], path: Path, rows: int, layout: Layout) -> None:
    with path.open("wb") as file:
        for table in tables:
            # orjson writes float32 (float16) values in their shortest form, which reads back
            # exactly, and integers as integers.
            for line in _json_lines(table, layout):
                file.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def _json_lines(table: Any, layout: Layout) -> Iterator[dict[str, Any]]:
    """Each row of a chunk as its JSONL object, built from NumPy views of the chunk."""
    ids = table.column("id").to_pylist()
    fields: list[tuple[str, Callable[[int], Any]]] = []
    if "dense" in layout.kinds:
        vectors = convert(vectors_of(table), layout.dtype)
        fields.append((FIELDS["dense"], vectors.__getitem__))
    if "sparse" in layout.kinds:
        indices, values = table.column("sparse_embedding").combine_chunks().flatten()
        index_of, value_of = _rows(indices), _rows(values)
        fields.append((FIELDS["sparse"], lambda i: {"indices": index_of(i), "values": value_of(i)}))
    if "multivector" in layout.kinds:
        fields.append((FIELDS["multivector"], _rows(table.column("colbert_vecs").combine_chunks())))
    for i, doc_id in enumerate(ids):
        yield {"id": doc_id} | {name: value(i) for name, value in fields}


def _rows(lists: Any) -> Callable[[int], np.ndarray]:
    """Row i of an Arrow list array as a NumPy view: a vector, or a matrix when the items are
    fixed-size lists."""
    import pyarrow as pa

    offsets = lists.offsets.to_numpy()
    items = lists.values  # indexed by the offsets, whatever the array's own offset
    if pa.types.is_fixed_size_list(items.type):  # fixed-size rows: a matrix
        flat = items.flatten().to_numpy(zero_copy_only=False).reshape(-1, items.type.list_size)
    else:
        flat = items.to_numpy(zero_copy_only=False)
    return lambda i: flat[offsets[i] : offsets[i + 1]]
