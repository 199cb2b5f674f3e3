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
from multiprocessing.connection import wait
from typing import Any, Callable

from gateway.config import Settings
from gateway.metrics import worker_exited

log = logging.getLogger("gateway")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers can bind to the same address as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(settings: Settings, serve_one: Callable[[Settings, Any], int]) -> int:
    """Run `settings.workers` processes of `serve_one(settings, sock)`; 0 when they all stopped
    cleanly, 1 when one failed (the others are then stopped too, as a failed engine does)."""
    context = multiprocessing.get_context("spawn")
    # Not daemonic: each worker's vLLM engine starts processes of its own.
    workers = [context.Process(target=_worker_main, args=(serve_one, settings, os.getpid()),
                               name=f"gateway-worker-{i}", daemon=False)
               for i in range(settings.workers)]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn's graceful shutdown in the worker

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        log.info("started %d gateway workers on %s:%d", len(workers), settings.host,
                 settings.port)
        failed = False
        running = list(workers)
        while running:
            for sentinel in wait([w.sentinel for w in running]):
                worker = next(w for w in running if w.sentinel == sentinel)
                worker.join()
                running.remove(worker)
                if worker.pid is not None:
                    worker_exited(worker.pid)
                if worker.exitcode != 0 and not stopping:
                    log.error("%s exited with %s; stopping the others", worker.name,
                              worker.exitcode)
                    failed = True
                    stop(signal.SIGTERM, None)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_main(serve_one: Callable[[Settings, Any], int], settings: Settings,
                 supervisor: int) -> None:
    # Started before anything slow, and given the supervisor's pid rather than reading it
    # here: a supervisor that died while this process was still importing would be missed.
    threading.Thread(target=_stop_when_orphaned, args=(supervisor,), daemon=True,
                     name="supervisor-watch").start()
    sock = reuse_port_socket(settings.host, settings.port)
    raise SystemExit(serve_one(settings, sock))


def _stop_when_orphaned(parent: int) -> None:
    # A supervisor killed with SIGKILL cannot stop its workers; they would keep the port.
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
