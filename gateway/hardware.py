"""Sizing decided from the machine: how many worker processes `--workers auto` starts, and
how the accelerator's memory is shared between engines. Read by config.py when it builds
Settings, so that the startup log shows the result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Models at most this big get several engine replicas (one per worker) on a GPU by default.
_SMALL_MODEL_BYTES = 1 << 30
_MAX_AUTO_WORKERS = 4
# The accelerator memory all engines together take by default, as vLLM's own default.
_TOTAL_SHARE = 0.9


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


def default_workers(model_folders: Sequence[str], *, gpu: bool, cpus: int) -> int:
    """`--workers auto`: 1 on CPU, where the engine already uses every core. On a GPU a small
    model leaves the GPU idle while one process's event loop is busy with per-request work, so
    several processes (each with its own engine) serve more: one per 4 cores, at most 4."""
    if not gpu or any(weights_bytes(m) > _SMALL_MODEL_BYTES for m in model_folders):
        return 1
    return max(1, min(_MAX_AUTO_WORKERS, cpus // 4))


def weights_bytes(model: str) -> int:
    """Size of a local folder's weight files; a hub id (unknown size) counts as large."""
    folder = Path(model)
    if not folder.is_dir():
        return _SMALL_MODEL_BYTES + 1
    return sum(
        f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern)
    )


def memory_shares(explicit: Sequence[float | None], workers: int = 1) -> list[float | None]:
    """Each model's engine memory share, given the explicit ones (None: unset). On a GPU,
    engines without an explicit share split what the explicit ones leave of 0.9 evenly
    (every worker has its own engine per model); on CPU, or with one engine, unset stays
    unset and the adapter's own default applies. An explicit share is per engine."""
    unset = [share for share in explicit if share is None]
    if (len(explicit) < 2 and workers < 2) or not unset or not has_nvidia_gpu():
        return list(explicit)
    taken = workers * sum(share or 0.0 for share in explicit)
    engines = len(unset) * workers
    share = round(max(_TOTAL_SHARE - taken, 0.05 * engines) / engines, 3)
    return [share if given is None else given for given in explicit]
