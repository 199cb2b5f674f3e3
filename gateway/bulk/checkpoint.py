"""The resumable run folder: ordered chunk files and a manifest, both made durable before they
count, and the fingerprint that stops a rerun from mixing two different runs.

Commit protocol for chunk k (rows `documents` .. `documents + n - 1`): write
`chunk-<k>.arrow.tmp`, fsync, rename to `chunk-<k>.arrow`, fsync the folder; then the same for
`manifest.json` with `chunks = k + 1`. The manifest is the truth: a chunk file past its
`chunks` (a crash between the two renames) is ignored and overwritten. Chunks are committed in
row order, so a run resumes at row `documents` with no gap and no duplicate.

A chunk holds the columns of the final output (`outputs.py`): `id`, and those of the outputs
asked for: `vector` (float32, fixed size), `sparse_embedding` (struct of `indices`, list of
int64, and `values`, list of float32) and `colbert_vecs` (list of fixed-size float32 rows).

A lock file (`fcntl.flock`) keeps a second process off a folder in use; the kernel releases it
when the holder dies, SIGKILL included.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from adapters.base import SparseVector
from gateway.bulk import BulkError
from gateway.bulk.sources import DocumentId

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MANIFEST = "manifest.json"
_VERSION = 1


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A stable hash of the run's identity (input, model, options)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Checkpoint:
    """One run folder, locked by this process from `open` until `close`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.documents = 0  # rows committed
        self.chunks = 0
        self.tokens = 0
        self.dimension: int | None = None  # of `vector`; 0 without dense vectors
        self.token_dimension = 0  # of `colbert_vecs` rows
        self._parts: dict[str, Any] = {}
        self._lock: Any = None

    @classmethod
    def open(cls, folder: Path) -> Checkpoint:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = cls(folder)
        lock = (folder / "lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise BulkError(f"another run is using {folder}; wait for it to end") from None
        checkpoint._lock = lock
        return checkpoint

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def begin(self, parts: Mapping[str, Any], *, restart: bool) -> None:
        """Resume the run recorded here if it has the same fingerprint, start one if there is
        none; refuse a different one unless `restart` (which discards it)."""
        saved = self._read_manifest()
        if saved is not None and saved.get("fingerprint") != fingerprint(parts):
            if not restart:
                raise BulkError(_mismatch(self.folder, saved.get("parts", {}), parts))
            saved = None
        self._parts = json.loads(json.dumps(parts, default=str))
        if saved is None:
            for old in self.folder.glob("chunk-*"):
                old.unlink()
            self.documents = self.chunks = self.tokens = 0
            self.dimension, self.token_dimension = None, 0
            self._write_manifest()
            return
        self.documents, self.chunks = saved["documents"], saved["chunks"]
        self.tokens, self.dimension = saved["tokens"], saved["dimension"]
        self.token_dimension = saved.get("token_dimension", 0)

    def commit(
        self,
        ids: list[DocumentId],
        vectors: npt.NDArray[np.float32] | None,
        tokens: int,
        *,
        sparse: Sequence[SparseVector] | None = None,
        multivector: Sequence[npt.NDArray[np.float32]] | None = None,
    ) -> None:
        """Make the next rows durable: for each id, its dense vector (a float32 row of
        `vectors`), sparse vector and token vectors (a float32 matrix), those given."""
        import pyarrow as pa

        table = chunk_table(ids, vectors, sparse=sparse, multivector=multivector)
        path = self._chunk_path(self.chunks)
        temporary = path.with_suffix(".tmp")
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_dir(self.folder)
        self.chunks += 1
        self.documents += len(ids)
        self.tokens += tokens
        self.dimension = int(vectors.shape[1]) if vectors is not None else 0
        if table.schema.get_field_index("colbert_vecs") >= 0:
            self.token_dimension = table.schema.field("colbert_vecs").type.value_type.list_size
        self._write_manifest()

    def tables(self) -> Iterator[Any]:
        """The committed chunks in row order, as Arrow tables (`chunk_table`'s columns)."""
        import pyarrow as pa

        for k in range(self.chunks):
            with pa.memory_map(str(self._chunk_path(k))) as source:
                yield pa.ipc.open_file(source).read_all()

    def remove(self) -> None:
        """Delete the folder (the output is complete)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk-{k:09d}.arrow"

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except ValueError as exc:  # cannot happen with atomic renames, unless edited by hand
            raise BulkError(
                f"{path} is damaged ({exc}); delete {self.folder} or pass --restart"
            ) from exc
        if data.get("version") != _VERSION:
            raise BulkError(
                f"{self.folder} was written by another version of this command; "
                "delete it or pass --restart"
            )
        return data

    def _write_manifest(self) -> None:
        data = {
            "version": _VERSION,
            "fingerprint": fingerprint(self._parts),
            "parts": self._parts,
            "documents": self.documents,
            "chunks": self.chunks,
            "tokens": self.tokens,
            "dimension": self.dimension,
            "token_dimension": self.token_dimension,
        }
        path = self.folder / MANIFEST
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1))
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_dir(self.folder)


def chunk_table(
    ids: list[DocumentId],
    vectors: npt.NDArray[np.float32] | None,
    *,
    sparse: Sequence[SparseVector] | None = None,
    multivector: Sequence[npt.NDArray[np.float32]] | None = None,
) -> Any:
    """An Arrow table of `id` and a column for each output given (see the module docstring)."""
    import numpy as np
    import pyarrow as pa

    id_type = pa.string() if ids and isinstance(ids[0], str) else pa.int64()
    columns = {"id": pa.array(ids, type=id_type)}
    if vectors is not None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        columns["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(matrix.reshape(-1)), matrix.shape[1]
        )
    if sparse is not None:
        offsets = pa.array(_offsets([len(v.indices) for v in sparse]))
        indices = _concatenate([v.indices for v in sparse], np.int64)
        values = _concatenate([v.values for v in sparse], np.float32)
        columns["sparse_embedding"] = pa.StructArray.from_arrays(
            [
                pa.ListArray.from_arrays(offsets, pa.array(indices)),
                pa.ListArray.from_arrays(offsets, pa.array(values)),
            ],
            names=["indices", "values"],
        )
    if multivector is not None:
        # Every matrix is 2-D, one with no rows too, so the first one gives the width.
        flat = _concatenate([m.reshape(-1) for m in multivector], np.float32)
        rows = pa.FixedSizeListArray.from_arrays(pa.array(flat), multivector[0].shape[1])
        columns["colbert_vecs"] = pa.ListArray.from_arrays(
            pa.array(_offsets([len(m) for m in multivector])), rows
        )
    return pa.table(columns)


def _offsets(lengths: Sequence[int]) -> Any:
    import numpy as np

    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)


def _concatenate(parts: Sequence[Any], dtype: Any) -> Any:
    import numpy as np

    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _mismatch(folder: Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    before, after = _flat(saved), _flat(now)
    changed = [
        f"{key} was {_brief(before.get(key))}, now {_brief(after.get(key))}"
        for key in sorted(set(before) | set(after))
        if _brief(before.get(key)) != _brief(after.get(key))
    ]
    return (
        f"{folder} holds an unfinished run of a different job, which cannot be mixed with "
        f"this one ({'; '.join(changed)}). Rerun with the original input, model and "
        "options to finish it, or pass --restart to discard it and start over."
    )


def _flat(parts: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"input": {"sha256": x}} -> {"input.sha256": x}, so that a refusal names the field."""
    flat: dict[str, Any] = {}
    for key, value in parts.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as file:
        os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
