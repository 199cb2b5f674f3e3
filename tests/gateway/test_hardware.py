"""Sizing from the machine: `--workers auto` and accelerator memory shares."""

from __future__ import annotations

import pytest

from gateway.config import load_settings, resolve_model_path
from gateway.hardware import default_workers, memory_shares


def test_default_workers_on_a_gpu_follow_cores_and_model_size() -> None:
    small = [resolve_model_path("builtin:all-MiniLM-L6-v2")]  # about 90 MB
    assert default_workers(small, gpu=True, cpus=16) == 4
    assert default_workers(small, gpu=True, cpus=8) == 2
    assert default_workers(small, gpu=True, cpus=2) == 1
    assert default_workers(small, gpu=False, cpus=64) == 1
    hub_id = ["BAAI/bge-large-en-v1.5"]
    assert default_workers(hub_id, gpu=True, cpus=16) == 1  # size unknown: one replica


def test_gpu_memory_is_split_across_worker_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hardware.has_nvidia_gpu", lambda: True)
    settings = load_settings({"workers": "4"}, environ={})
    assert settings.models[0].engine.gpu_memory_utilization == pytest.approx(0.225)


def test_unset_shares_split_what_explicit_ones_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hardware.has_nvidia_gpu", lambda: True)
    assert memory_shares([None, None]) == [0.45, 0.45]
    assert memory_shares([0.5, None, None]) == [0.5, 0.2, 0.2]
    assert memory_shares([None], workers=2) == [0.45]


def test_cpu_leaves_shares_to_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hardware.has_nvidia_gpu", lambda: False)
    assert memory_shares([None, None], workers=3) == [None, None]
