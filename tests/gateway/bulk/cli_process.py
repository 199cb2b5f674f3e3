"""`python -m gateway embed` as a process over the fake engine, stopped by a signal midway
through a run and run again: the flow the SIGKILL and SIGTERM tests share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.paths import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def embed_command(source: Path, output: Path, *options: str) -> list[str]:
    """The CLI over the fake engine at 20 ms per engine call, 40 tokens per batch: slow enough
    for a signal to land midway."""
    return [
        sys.executable,
        "-m",
        "gateway",
        "embed",
        str(source),
        "-o",
        str(output),
        "--engine",
        "fake",
        "--engine-kwargs",
        '{"latency_s": 0.02}',
        "--batch-tokens",
        "40",
        *options,
    ]


@dataclass
class Stopped:
    returncode: int
    stderr: str
    saved: int  # documents in the checkpoint's manifest after the stop (-1: no manifest)


def stop_midway(
    command: list[str], cwd: Path, manifest: Path, after_documents: int, signum: signal.Signals
) -> Stopped:
    """Start `command`, wait (up to 30 s) until its checkpoint holds `after_documents`, send
    `signum`, and wait for the process to end."""
    process = subprocess.Popen(command, cwd=cwd, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        manifest.exists() and json.loads(manifest.read_text())["documents"] >= after_documents
    ):
        time.sleep(0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=10)
    saved = json.loads(manifest.read_text())["documents"] if manifest.exists() else -1
    return Stopped(process.returncode, err, saved)


def rerun(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command again, to its end."""
    return subprocess.run(command, cwd=cwd, env=ENV, check=False, capture_output=True, text=True)
