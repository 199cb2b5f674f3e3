"""Starting, waiting for and stopping a server process, with a tiny HTTP server that answers
/ready 503 a few times before 200."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.launch import Launch, free_port, gateway_command, running, spawn, stop, wait_ready

# argv: port, how many /ready answers are 503 before the first 200.
TINY_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, not_ready = int(sys.argv[1]), int(sys.argv[2])
asked = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global asked
        asked += 1
        self.send_response(503 if asked <= not_ready else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


print("listening", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def tiny(port: int, not_ready: int = 0) -> list[str]:
    return [sys.executable, "-c", TINY_SERVER, str(port), str(not_ready)]


def test_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_gateway_command_serves_on_loopback() -> None:
    command = gateway_command(8123, "--engine", "fake")
    assert command == [
        sys.executable,
        *("-m", "gateway", "serve", "--host", "127.0.0.1", "--port", "8123"),
        *("--engine", "fake"),
    ]


def test_wait_ready_returns_on_200_and_records_what_it_saw(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    process = spawn(tiny(port, not_ready=3), log)
    seen: list[int] = []
    try:
        wait_ready(
            f"http://127.0.0.1:{port}/ready", process, log, timeout_s=30, poll_s=0.05, seen=seen
        )
        assert seen == [503, 503, 503, 200]
    finally:
        assert stop(process) == -signal.SIGTERM
    assert "listening" in log.read_text()


def test_wait_ready_raises_with_the_log_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    process = spawn([sys.executable, "-c", "print('cannot start'); raise SystemExit(3)"], log)
    with pytest.raises(RuntimeError, match=r"exited with 3:\ncannot start"):
        wait_ready(f"http://127.0.0.1:{free_port()}/ready", process, log, timeout_s=30)


def test_wait_ready_gives_up_after_the_timeout(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    process = spawn(tiny(port, not_ready=10**6), log)
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="did not become ready in 1 s"):
            wait_ready(f"http://127.0.0.1:{port}/ready", process, log, timeout_s=1, poll_s=0.1)
        assert time.monotonic() - started < 10
    finally:
        stop(process)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('up', flush=True); time.sleep(60)"
    )
    process = spawn([sys.executable, "-c", stubborn], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stop(process, timeout_s=0.5) == -signal.SIGKILL


def test_stop_of_a_group_reaches_its_children(tmp_path: Path) -> None:
    process = spawn(
        ["bash", "-c", "sleep 60 & echo $! ; wait"], tmp_path / "group.log", new_session=True
    )
    deadline = time.monotonic() + 10
    while not (tmp_path / "group.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(int((tmp_path / "group.log").read_text().split()[0]))
    stop(process, timeout_s=5, group=True)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_spawn_adds_offline_hub_to_the_environment(tmp_path: Path) -> None:
    log = tmp_path / "env.log"
    process = spawn([sys.executable, "-c", "import os; print(os.environ['HF_HUB_OFFLINE'])"], log)
    assert process.wait(30) == 0
    assert log.read_text().strip() == "1"


def test_running_starts_a_launch_and_stops_it_afterwards(tmp_path: Path) -> None:
    port = free_port()
    launch = Launch("tiny", tiny(port, not_ready=1), "/ready", "/v1/embeddings", "/rerank")
    with running(launch, port, tmp_path / "logs", timeout_s=30) as server:
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert httpx.get(server.base_url + "/ready").status_code == 200
        assert server.log_path == tmp_path / "logs" / "tiny.log"
        assert server.psutil.pid == server.process.pid
    assert server.process.poll() is not None


def test_launch_shows_the_command_as_a_user_types_it() -> None:
    launch = Launch(
        "vllm",
        [sys.executable, "-m", "x", "--model", "/models/m", "--host", "127.0.0.1", "--port", "9"],
        "/health",
        "/v1/embeddings",
        "/rerank",
        env={"A": "1"},
        unset=("B",),
    )
    assert launch.shown("/models/m") == "python -m x --model MODEL"
    environment = launch.environment({"B": "2", "C": "3"})
    assert environment == {"C": "3", "HF_HUB_OFFLINE": "1", "A": "1"}
