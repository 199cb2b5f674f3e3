"""Bounded connections, over real sockets against a gateway process (fake engine): header
size, header and body deadlines, keep-alive timeout, and the connection cap."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness.gateway import Gateway, start_gateway
from harness.raw_http import closed_by_server

pytestmark = pytest.mark.process  # starts gateway processes

LIMITS = [
    "--header-timeout-s",
    "1",
    "--body-timeout-s",
    "1",
    "--keep-alive-timeout-s",
    "1",
    "--max-connections",
    "50",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(
        tmp_path_factory.mktemp("connections"), fake_models={"fake": {}}, args=LIMITS
    )
    yield server
    server.stop()


def connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def test_a_4_mib_header_is_refused_with_431_or_a_close(gateway) -> None:
    sock = connect(gateway)
    sent = 0

    def flood() -> None:
        nonlocal sent
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection: what this test wants

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    reply = closed_by_server(sock, within_s=5)
    sender.join(5)
    sock.close()
    assert reply is not None, "the server kept reading the header"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 ")
    assert sent < 4 * 2**20
    assert httpx.get(gateway.base_url + "/health").status_code == 200


def test_a_header_just_under_the_limit_is_served(gateway) -> None:
    response = httpx.get(gateway.base_url + "/health", headers={"x-pad": "a" * 60_000})
    assert response.status_code == 200


def test_half_open_requests_are_closed_after_the_header_deadline(gateway) -> None:
    socks = [connect(gateway) for _ in range(40)]
    for sock in socks[:30]:
        sock.sendall(b"POST /v1/embed")  # half a request line, then nothing
    # The other 10 send nothing at all. Each must be closed once the 1 s header deadline has
    # passed: polled up to a deadline rather than after a fixed sleep.
    deadline = time.monotonic() + 5
    left_open = [
        s
        for s in socks
        if closed_by_server(s, within_s=max(0.0, deadline - time.monotonic())) is None
    ]
    for sock in socks:
        sock.close()
    assert left_open == []


def test_a_stalled_body_is_closed_after_the_body_deadline(gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b'\r\nContent-Length: 100\r\n\r\n{"model": '
    )
    started = time.monotonic()
    reply = closed_by_server(sock, within_s=4)
    sock.close()
    assert reply is not None, "the stalled body kept the connection open"
    assert 0.9 < time.monotonic() - started < 4


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(gateway) -> None:
    sock = connect(gateway)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert closed_by_server(sock, within_s=4) == b""
    assert time.monotonic() - started < 2.5
    sock.close()


def stalled_request(gateway: Gateway) -> socket.socket:
    """A connection with a request in flight: its head sent, its body still to come."""
    sock = connect(gateway)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b'\r\nContent-Length: 100\r\n\r\n{"model": '
    )
    return sock


def test_past_the_connection_cap_requests_get_503_at_once_but_probes_are_served(
    tmp_path: Path,
) -> None:
    server = start_gateway(
        tmp_path,
        fake_models={"fake": {}},
        args=["--max-connections", "5", "--header-timeout-s", "30"],
    )
    busy = [stalled_request(server) for _ in range(5)]
    try:
        # Polled up to a deadline until the server has counted the 5 idle connections; each
        # answer comes at once.
        deadline = time.monotonic() + 10
        while True:
            started = time.monotonic()
            refused = httpx.get(server.base_url + "/v1/models", timeout=5)
            assert time.monotonic() - started < 2
            if refused.status_code != 200:
                break
            assert time.monotonic() < deadline, "the idle connections were never counted"
            time.sleep(0.05)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json()["error"]["code"] == "too_many_connections"
        assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
        assert httpx.get(server.base_url + "/ready", timeout=5).status_code == 200
        for sock in busy:
            sock.close()
        deadline = time.monotonic() + 10  # until the server has seen them closed
        while (after := httpx.get(server.base_url + "/v1/models")).status_code == 503:
            assert time.monotonic() < deadline, "the closed connections were never released"
            time.sleep(0.05)
        assert after.status_code == 200
    finally:
        server.stop()
