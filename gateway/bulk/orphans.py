"""End the engine's processes if this process dies without shutting them down.

vLLM's engine-core process does not notice that the process that started it was SIGKILLed
(or OOM-killed): it keeps running and keeps its memory. A run of `embed` is made to be killed
and rerun, so it starts a small watcher in its own session that holds the read end of a pipe:
if the pipe closes without the word "done" (this process died), the watcher SIGKILLs the
processes it was given. Linux only (children are read from /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

_WATCHER = """
import os, signal, sys
pids = [int(p) for p in sys.argv[1:]]
if sys.stdin.read() != "done":
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
"""


def child_pids() -> list[int]:
    """This process's children (the engine's processes, once it has started)."""
    pids = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


class OrphanGuard:
    """`guard(pids)` watches them until `release()` (after the engine's own shutdown)."""

    def __init__(self) -> None:
        self._pipe: IO[str] | None = None

    def guard(self, pids: list[int]) -> None:
        if not pids:
            return
        watcher = subprocess.Popen(
            [sys.executable, "-c", _WATCHER, *map(str, pids)],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._pipe = watcher.stdin
        self._watcher = watcher

    def release(self) -> None:
        if self._pipe is None:
            return
        self._pipe.write("done")
        self._pipe.close()
        self._pipe = None
        self._watcher.wait()
