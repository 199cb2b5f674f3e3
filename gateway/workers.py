"""Several gateway processes on one port (`--workers N`), each owning its own engines.

One process's event loop tops out at about one core of per-request work (HTTP, JSON, the
engine front end); with a small model on a GPU that, not the GPU, limits throughput. Each
worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads connections
across workers without a shared accept lock, and each worker starts its engines in its own
lifespan (vLLM spawns processes, so engines cannot be inherited). Workers are spawned, not
forked, for the same reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from gateway.config import Settings
from gateway.metrics import worker_exited

log = logging.getLogger("gateway")


def reuse_port_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A socket bound to an address other workers can bind as well; listening unless
    `listen` is false (then the server listens on it once it starts serving: the kernel hands
    connections only to listening sockets of the group)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# A worker that served this long before it exited counts as having held: the next failure
# starts the restart count over.
_STABLE_S = 60.0
_MAX_BACKOFF_S = 30.0


def run_workers(settings: Settings, serve_one: Callable[[Settings, Any, bool], int]) -> int:
    """Run `settings.workers` processes of `serve_one(settings, sock, replacement)` until
    SIGTERM or SIGINT (then 0 once they all stopped). A worker that exits meanwhile (killed, crashed, or
    a model down for good) is replaced while the others keep serving, after a backoff of
    `engine_restart_backoff_s` doubled per quick failure; after `engine_restart_attempts`
    replacements in a row that exit within a minute, the others are stopped and the
    supervisor exits 1, for the orchestrator to restart."""
    context = multiprocessing.get_context("spawn")
    stopping = False
    workers: dict[int, Any] = {}  # slot -> Process

    def spawn(slot: int, replacement: bool = False) -> None:
        # Not daemonic: each worker's vLLM engine starts processes of its own.
        worker = context.Process(
            target=_worker_main,
            args=(serve_one, settings, os.getpid(), replacement),
            name=f"gateway-worker-{slot}",
            daemon=False,
        )
        worker.start()
        worker.started_at = time.monotonic()  # type: ignore[attr-defined]
        workers[slot] = worker

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers.values():
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker drains, then exits

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    failures = {slot: 0 for slot in range(settings.workers)}
    try:
        for slot in range(settings.workers):
            spawn(slot)
        log.info("started %d gateway workers on %s:%d", len(workers), settings.host, settings.port)
        failed = False
        while workers:
            for sentinel in wait([w.sentinel for w in workers.values()]):
                slot = next(s for s, w in workers.items() if w.sentinel == sentinel)
                worker = workers.pop(slot)
                worker.join()
                if worker.pid is not None:
                    worker_exited(worker.pid)  # its metrics gauges stop counting
                if stopping:
                    continue
                if time.monotonic() - worker.started_at >= _STABLE_S:
                    failures[slot] = 0
                if failures[slot] >= settings.engine_restart_attempts:
                    log.critical(
                        "%s exited with %s, %d times in a row; stopping the others",
                        worker.name,
                        worker.exitcode,
                        failures[slot],
                    )
                    failed = True
                    stop(signal.SIGTERM, None)
                    continue
                delay = min(settings.engine_restart_backoff_s * 2 ** failures[slot], _MAX_BACKOFF_S)
                failures[slot] += 1
                log.error(
                    "%s exited with %s; starting a new one in %g s",
                    worker.name,
                    worker.exitcode,
                    delay,
                )
                _sleep_unless(lambda: stopping, delay)
                if not stopping:
                    spawn(slot, replacement=True)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _sleep_unless(stopped: Callable[[], bool], seconds: float) -> None:
    """Sleep `seconds`, or less if a signal handler sets the stop condition meanwhile."""
    deadline = time.monotonic() + seconds
    while not stopped() and time.monotonic() < deadline:
        time.sleep(min(0.1, deadline - time.monotonic()))


def _worker_main(
    serve_one: Callable[[Settings, Any, bool], int],
    settings: Settings,
    supervisor: int,
    replacement: bool,
) -> None:
    # Started before anything slow, and given the supervisor's pid rather than reading it
    # here: a supervisor that died while this process was still importing would be missed.
    threading.Thread(
        target=_stop_when_orphaned, args=(supervisor,), daemon=True, name="supervisor-watch"
    ).start()
    # A replacement joins the port only once its engines are ready: listening from the start,
    # it would take its share of new connections and answer them 503 while it loads (a
    # minute on a CPU), though the other workers are serving. The first workers listen at
    # once, so that /health answers and /ready says 503 while the server starts.
    sock = reuse_port_socket(settings.host, settings.port, listen=not replacement)
    raise SystemExit(serve_one(settings, sock, replacement))


def _stop_when_orphaned(parent: int) -> None:
    # A supervisor killed with SIGKILL cannot stop its workers; they would keep the port.
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
