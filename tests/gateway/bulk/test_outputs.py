"""The final output: written whole or not at all, never through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gateway.bulk.checkpoint import chunk_table
from gateway.bulk.outputs import write

VECTORS = np.arange(12, dtype=np.float32).reshape(3, 4)


def chunks() -> list:
    return [chunk_table([0, 1], VECTORS[:2]), chunk_table([2], VECTORS[2:])]


@pytest.mark.parametrize("fmt", ["npy", "parquet", "jsonl"])
def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path, fmt: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    output = tmp_path / f"v.{fmt}"
    # The name a temporary file beside the output would have had, and the output itself.
    (tmp_path / f".v.{fmt}.tmp").symlink_to(victim)
    write(chunks(), fmt, output, rows=3, dimension=4)
    assert victim.read_bytes() == b"keep me"
    assert output.is_file() and not output.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [f".v.{fmt}.tmp"]


def test_the_output_gets_the_permissions_of_a_new_file(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        write(chunks(), "jsonl", tmp_path / "v.jsonl", rows=3, dimension=4)
    finally:
        os.umask(mask)
    assert (tmp_path / "v.jsonl").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_leaves_neither_output_nor_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="expected 5"):
        write(chunks(), "npy", tmp_path / "v.npy", rows=5, dimension=4)
    assert list(tmp_path.iterdir()) == []
