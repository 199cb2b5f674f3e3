"""The run folder: durable ordered chunks, resuming from the manifest, the fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.base import SparseVector
from gateway.bulk import BulkError
from gateway.bulk.checkpoint import Checkpoint
from gateway.bulk.outputs import vectors_of

PARTS = {"input": {"sha256": "aaa", "documents": 5}, "options": {"dimensions": None}}


def test_committed_chunks_survive_and_the_run_resumes_at_the_next_row(tmp_path: Path) -> None:
    first = Checkpoint.open(tmp_path / "run")
    first.begin(PARTS, restart=False)
    first.commit([0, 1], np.ones((2, 3), np.float32), tokens=7)
    first.commit([2], np.full((1, 3), 2, np.float32), tokens=4)
    first.close()
    # A chunk renamed into place just before a crash, which the manifest never counted.
    (tmp_path / "run" / "chunk-000000002.arrow").write_bytes(b"half a chunk")

    again = Checkpoint.open(tmp_path / "run")
    again.begin(PARTS, restart=False)
    assert (again.documents, again.chunks, again.tokens, again.dimension) == (3, 2, 11, 3)
    again.commit([3, 4], np.zeros((2, 3), np.float32), tokens=2)
    tables = list(again.tables())
    assert [t.column("id").to_pylist() for t in tables] == [[0, 1], [2], [3, 4]]
    assert np.array_equal(np.concatenate([vectors_of(t) for t in tables])[:, 0], [1, 1, 2, 0, 0])
    again.remove()
    assert not (tmp_path / "run").exists()


def test_a_different_fingerprint_is_refused_naming_what_changed(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "run") as checkpoint:
        pass
    checkpoint = Checkpoint.open(tmp_path / "run")
    checkpoint.begin(PARTS, restart=False)
    checkpoint.commit([0], np.ones((1, 3), np.float32), tokens=1)
    changed = {"input": {"sha256": "bbb", "documents": 5}, "options": {"dimensions": 8}}
    with pytest.raises(
        BulkError,
        match=r"input.sha256 was \"aaa\", now \"bbb\"; "
        r"options.dimensions was null, now 8",
    ):
        checkpoint.begin(changed, restart=False)
    checkpoint.begin(changed, restart=True)
    assert (checkpoint.documents, list(checkpoint.tables())) == (0, [])
    checkpoint.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    holder = Checkpoint.open(tmp_path / "run")
    with pytest.raises(BulkError, match="another run is using"):
        Checkpoint.open(tmp_path / "run")
    holder.close()
    Checkpoint.open(tmp_path / "run").close()


def test_sparse_and_token_vectors_are_kept_and_resumed(tmp_path: Path) -> None:
    sparse = [
        SparseVector(np.array([3, 9], np.int64), np.array([0.5, 1.5], np.float32)),
        SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32)),
    ]
    tokens = [np.arange(8, dtype=np.float32).reshape(2, 4), np.zeros((0, 4), np.float32)]
    first = Checkpoint.open(tmp_path / "run")
    first.begin(PARTS, restart=False)
    first.commit([0, 1], None, tokens=5, sparse=sparse, multivector=tokens)
    first.close()

    again = Checkpoint.open(tmp_path / "run")
    again.begin(PARTS, restart=False)
    assert (again.documents, again.dimension, again.token_dimension) == (2, 0, 4)
    [table] = list(again.tables())
    assert table.column_names == ["id", "sparse_embedding", "colbert_vecs"]
    assert table.column("sparse_embedding").to_pylist() == [
        {"indices": [3, 9], "values": [0.5, 1.5]},
        {"indices": [], "values": []},
    ]
    assert table.column("colbert_vecs").to_pylist() == [[[0, 1, 2, 3], [4, 5, 6, 7]], []]
    again.close()
