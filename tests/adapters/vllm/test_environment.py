"""The CPU engine's process environment: thread binding and preloaded libraries."""

from __future__ import annotations

import pytest

from adapters.vllm import environment
from adapters.vllm.environment import cpu_thread_binding


def test_cpu_thread_binding_lists_every_available_core() -> None:
    assert cpu_thread_binding("all", {0, 1}) == "0-1"
    assert cpu_thread_binding("all", {3}) == "3"
    assert cpu_thread_binding("all", {0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpu_thread_binding("auto", {0, 1}) == "auto"
    assert cpu_thread_binding("0-3|4-7", {0}) == "0-3|4-7"


def test_cpu_preload_puts_tcmalloc_and_intel_openmp_first_once(monkeypatch, tmp_path) -> None:
    import ctypes.util
    import sys

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.4")
    iomp = str(tmp_path / "lib" / "libiomp5.so")
    assert environment.cpu_preload("") == f"libtcmalloc_minimal.so.4:{iomp}"
    # The operator's own entries stay, after ours; a library already named is not added twice.
    assert (
        environment.cpu_preload("/x/libfoo.so") == f"libtcmalloc_minimal.so.4:{iomp}:/x/libfoo.so"
    )
    assert environment.cpu_preload("/opt/libtcmalloc.so") == f"{iomp}:/opt/libtcmalloc.so"
    both = f"libtcmalloc_minimal.so.4:{iomp}"
    assert environment.cpu_preload(both) == both
    # Nothing found: nothing added.
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    (tmp_path / "lib" / "libiomp5.so").unlink()
    assert environment.cpu_preload("") == ""


def test_engine_environment_on_the_cpu_build_and_nothing_on_gpu(monkeypatch) -> None:
    monkeypatch.setattr(environment, "_vllm_cpu_build", lambda: True)
    monkeypatch.setattr(environment, "cpu_preload", lambda current: "libtcmalloc.so:libiomp5.so")
    assert environment.engine_environment("0-1,3") == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1,3",
        "LD_PRELOAD": "libtcmalloc.so:libiomp5.so",
    }
    monkeypatch.setattr(environment, "cpu_preload", lambda current: "")
    assert environment.engine_environment("auto") == {"VLLM_CPU_OMP_THREADS_BIND": "auto"}
    monkeypatch.setattr(environment, "_vllm_cpu_build", lambda: False)
    assert environment.engine_environment("all") == {}


@pytest.mark.process
def test_this_machine_has_the_cpu_build_and_the_preloads_make_installs() -> None:
    """`make install` installs vllm-cpu (with intel-openmp) and tcmalloc (apt): both found."""
    assert environment._vllm_cpu_build()
    preload = environment.cpu_preload("")
    assert "tcmalloc" in preload and "libiomp5.so" in preload
