"""What an idle gateway costs: CPU of its whole process tree with no traffic, per watchdog
interval (README "Reliability and security", engine faults).

    python -m bench.idle_cpu [--intervals 2 10] [--seconds 20]

Each probe is a one-token request through the engine, and after any request vLLM's worker
and engine-core processes busy-poll their shared-memory queues for a second before they
sleep: the probe interval sets how much of an idle machine the gateway keeps. Starts one
gateway per interval (the built-in MiniLM on the vLLM engine), waits until it is ready and a
few seconds more, then sums the CPU time of the gateway and every process under it over
`--seconds`. Prints a table and writes bench/results/idle_cpu.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.saved import run_facts
from harness.gateway import start_gateway
from harness.load import tree_cpu_by_name

MODEL = "all-MiniLM-L6-v2"
RESULTS = Path(__file__).parent / "results" / "idle_cpu.json"


def idle_share(interval_s: float, seconds: float, workdir: Path) -> dict[str, Any]:
    gateway = start_gateway(
        workdir,
        models=[{"name": MODEL, "path": "builtin:" + MODEL}],
        args=["--health-check-interval-s", str(interval_s)],
        ready_timeout=600,
    )
    try:
        time.sleep(5)  # start-up's own work settles
        root = psutil.Process(gateway.process.pid)
        before = tree_cpu_by_name(root)
        time.sleep(seconds)
        after = tree_cpu_by_name(root)
    finally:
        gateway.stop()
    share = {
        name: round(100 * (after[name] - before.get(name, 0.0)) / seconds, 1) for name in after
    }
    return {
        "health_check_interval_s": interval_s,
        "seconds": seconds,
        "cpu_pct_of_one_core_by_process": share,
        "cpu_pct_of_one_core": round(sum(share.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--intervals", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idle-cpu-"))
    rows = [idle_share(s, args.seconds, work / f"interval-{s:g}") for s in args.intervals]
    results = {**run_facts("bench.idle_cpu", None), "rows": rows}
    print("| --health-check-interval-s | idle CPU, % of one core | by process |")
    print("|---:|---:|---|")
    for row in rows:
        parts = ", ".join(f"{k} {v}" for k, v in row["cpu_pct_of_one_core_by_process"].items())
        print(f"| {row['health_check_interval_s']:g} | {row['cpu_pct_of_one_core']} | {parts} |")
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
