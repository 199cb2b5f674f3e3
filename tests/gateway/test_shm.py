from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway import shm


def free_space(monkeypatch: pytest.MonkeyPatch, mib: int) -> None:
    usage = shutil._ntuple_diskusage(total=mib * 2**20, used=0, free=mib * 2**20)  # type: ignore[attr-defined]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)


def test_dockers_default_64_mib_names_the_flag_that_fixes_it(monkeypatch: Any) -> None:
    free_space(monkeypatch, 64)
    message = shm.shortage(1)
    assert message is not None
    assert message.startswith(
        "/dev/shm has 64 MiB free; vLLM's engine processes need about 256 MiB"
    )
    assert "--shm-size=1g" in message
    assert "medium: Memory" in message


def test_room_for_every_engine_passes(monkeypatch: Any) -> None:
    free_space(monkeypatch, 1024)
    assert shm.shortage(4) is None
    assert shm.shortage(5) is not None


def test_no_shared_memory_folder_is_not_checked(tmp_path: Path) -> None:
    assert shm.shortage(1, str(tmp_path / "absent")) is None
