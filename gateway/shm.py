"""Shared memory for vLLM's engine processes, checked before any engine starts: a container
run with Docker's default /dev/shm (64 MiB) then stops with one line that names the fix,
instead of a traceback from inside an engine process a minute later."""

from __future__ import annotations

import shutil

SHM_PATH = "/dev/shm"
# Per engine. vLLM 0.32's engine processes map a 160 MiB segment for the tensors they pass each
# other (its ShmTensorArena) beside their message queues; 256 MiB covers both.
PER_ENGINE_BYTES = 256 * 2**20
_MIB = 2**20


def shortage(engines: int, path: str = SHM_PATH) -> str | None:
    """What to do when `path` has too little free space for `engines` vLLM engines; None when
    it has enough, or where there is no such folder (not Linux)."""
    try:
        free = shutil.disk_usage(path).free
    except FileNotFoundError:
        return None
    needed = engines * PER_ENGINE_BYTES
    if free >= needed:
        return None
    return (
        f"{path} has {free // _MIB} MiB free; vLLM's engine processes need about "
        f"{needed // _MIB} MiB there ({PER_ENGINE_BYTES // _MIB} MiB per engine). "
        "Docker: run with --shm-size=1g (or --ipc=host). Kubernetes: mount an emptyDir with "
        "medium: Memory at /dev/shm (deploy/kubernetes/base/deployment.yaml)."
    )
