"""HTTP written by hand on a socket: for requests a client library would correct (odd paths,
odd Host headers) and for watching how the server closes a connection."""

from __future__ import annotations

import socket

# Fits every route a fake-engine gateway serves, so that only the request line and headers
# decide the answer.
ANY_ROUTE_BODY = '{"model":"fake","input":"a","texts":["a"],"query":"a","documents":["a"]}'


def raw_status(port: int, request_line: str, host: str = "127.0.0.1") -> int:
    """The status the server on loopback `port` answers to `request_line` sent verbatim, with
    `host` as the Host header and a JSON body."""
    body = ANY_ROUTE_BODY
    message = (
        f"{request_line}\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(message.encode())
        reply = sock.recv(65536).decode(errors="replace")
    return int(reply.split(" ", 2)[1])


def closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it stayed open."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return received
    except TimeoutError:
        return None
    return received
