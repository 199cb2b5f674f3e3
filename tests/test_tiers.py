"""The test tiers stay honest: outside the `process` and `engine` markers (what `make test-fast`
runs), starting a process fails the test (the guard in tests/conftest.py)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest

from tests.conftest import UnmarkedProcessError


def test_an_unmarked_test_cannot_start_a_subprocess() -> None:
    with pytest.raises(UnmarkedProcessError, match="not marked `process`"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_an_unmarked_test_cannot_start_a_multiprocessing_worker() -> None:
    worker = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(UnmarkedProcessError, match="test_tiers.py"):
        worker.start()


@pytest.mark.process
def test_a_process_marked_test_can() -> None:
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


def test_the_fast_tier_leaves_out_both_process_tiers() -> None:
    from harness.paths import REPO

    makefile = (REPO / "Makefile").read_text()
    assert '-m "not engine and not process"' in makefile
