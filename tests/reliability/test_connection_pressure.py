"""Connections under pressure, over real sockets against a gateway process (fake engine):
past the cap, the connections that wait longest for a request head are closed to make room,
so half-open connections cannot keep a real request out, and a request in flight is never
closed for room."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from harness.gateway import Gateway, start_gateway
from harness.raw_http import closed_by_server

# A gateway process over real sockets.
pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(
        tmp_path_factory.mktemp("pressure"),
        fake_models={"fake": {}},
        args=["--max-connections", "20", "--header-timeout-s", "30", "--body-timeout-s", "30"],
    )
    yield server
    server.stop()


def connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def test_half_open_connections_past_the_cap_do_not_keep_a_request_out(gateway) -> None:
    half_open = []
    for _ in range(200):
        sock = connect(gateway)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        half_open.append(sock)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.post(
            gateway.base_url + "/v1/embeddings", json={"model": "fake", "input": "a"}, timeout=5
        )
        assert response.status_code == 200
        assert time.monotonic() - started < 2
        closed = sum(closed_by_server(s, within_s=0.01) is not None for s in half_open[:150])
        assert closed >= 150 - 20  # the oldest made room
        newest = [s for s in half_open[-10:] if closed_by_server(s, within_s=0.01) is None]
        assert len(newest) == 10  # and no more than room was made
    finally:
        for sock in half_open:
            sock.close()


def test_a_request_in_flight_is_never_closed_to_make_room(gateway) -> None:
    inflight = connect(gateway)
    inflight.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 31\r\n\r\n"
        b'{"model": "fake", '
    )
    time.sleep(0.2)
    idle = [connect(gateway) for _ in range(60)]
    try:
        time.sleep(0.2)
        inflight.sendall(b'"input": "a"}')
        reply = inflight.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    finally:
        inflight.close()
        for sock in idle:
            sock.close()
