"""The watcher that ends the engine's processes when `embed` is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.process  # starts CLI stand-ins and their child processes

# A stand-in for the CLI: it starts a long-lived child (the "engine process"), guards it,
# prints the child's pid, then waits to be killed or told to finish normally.
_CLI = textwrap.dedent("""
    import subprocess, sys, time
    from gateway.bulk.orphans import OrphanGuard, child_pids
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    guard = OrphanGuard()
    guard.guard(child_pids())
    print(engine.pid, flush=True)
    if sys.stdin.readline().strip() == "finish":
        engine.kill(); engine.wait()  # the engine's own shutdown
        guard.release()
""")


def start() -> tuple[subprocess.Popen, psutil.Process]:
    cli = subprocess.Popen(
        [sys.executable, "-c", _CLI], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert cli.stdout is not None
    return cli, psutil.Process(int(cli.stdout.readline()))


def test_a_sigkilled_cli_takes_its_engine_processes_with_it() -> None:
    cli, engine = start()
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    engine.wait(timeout=10)  # raises TimeoutExpired if the watcher did not end it
    cli.stdin.close()
    cli.stdout.close()


def test_a_normal_exit_releases_the_watcher_without_killing_anything() -> None:
    cli, _engine = start()
    cli.stdin.write("finish\n")
    cli.stdin.close()
    assert cli.wait(timeout=10) == 0
    cli.stdout.close()
    time.sleep(0.2)
    # The watcher has exited quietly: no process of ours left running the watcher code.
    watchers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and "os.kill(pid, signal.SIGKILL)" in " ".join(p.info["cmdline"])
        and p.pid != os.getpid()
        and p.ppid() in (cli.pid, 1)
    ]
    assert watchers == []
