"""What the single-table bench commands (`bench.ablation`, `bench.profile`) share: the facts
of a run, and saving it where docgen renders it from."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.markers import write_section
from harness.paths import REPO


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_facts(module: str, argv: list[str] | None) -> dict[str, Any]:
    """When, how and on what CPU a command ran (the start of its results' `meta`)."""
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": " ".join([f"python -m {module}", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
    }


def save(
    result: dict[str, Any],
    out: Path,
    *,
    default_out: Path,
    section: str,
    targets: tuple[str, ...],
    render: Callable[[dict[str, Any]], str],
) -> None:
    """Write `result` to `out`; for the default `out`, rewrite the docs' generated section
    too (docgen renders it from that file again); print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = render(result)
    if out == default_out:
        for target in targets:
            write_section(REPO / target, section, table)
    print(table)
