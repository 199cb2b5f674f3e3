"""Server CPU per request of uvicorn's HTTP protocols on the gateway (fake engine): uvicorn's
httptools, the gateway's bounded subclass of it (gateway/http/connections.py), and uvicorn's h11.

    python -m bench.protocol_cost [--requests 3000] [--rounds 2]

Measured as the server process's CPU time (psutil) over kept-alive requests, then over
requests on a new connection each, so that the client's own cost does not count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

from harness.launch import free_port, spawn, stop, wait_ready

KINDS = ("httptools", "bounded", "h11")
BODY = {"model": "fake", "input": ["hello world"]}


def serve(kind: str, port: int) -> None:
    import uvicorn

    from adapters.fake import FakeEngine
    from gateway.app import create_app
    from gateway.http.connections import ConnectionLimits, protocol_class
    from gateway.serving.registry import ModelRegistry, ServedModel

    app = create_app(ModelRegistry([ServedModel("fake", (), FakeEngine())]))
    http = protocol_class(ConnectionLimits()) if kind == "bounded" else kind
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning", access_log=False)


def cpu_us(process: psutil.Process, send, n: int) -> float:
    before = process.cpu_times()
    for _ in range(n):
        send()
    after = process.cpu_times()
    return ((after.user + after.system) - (before.user + before.system)) / n * 1e6


def measure(kind: str, requests: int, log_dir: Path) -> tuple[float, float]:
    port = free_port()
    log_path = log_dir / f"{kind}.log"
    server = spawn(
        [sys.executable, "-m", "bench.protocol_cost", "--serve", kind, str(port)], log_path
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", server, log_path, timeout_s=30, poll_s=0.1)
        process = psutil.Process(server.pid)
        with httpx.Client(base_url=url) as client:
            for _ in range(200):  # warm-up
                client.post("/v1/embeddings", json=BODY)
            kept = cpu_us(process, lambda: client.post("/v1/embeddings", json=BODY), requests)
        fresh = cpu_us(
            process,
            lambda: httpx.post(url + "/v1/embeddings", json=BODY, headers={"connection": "close"}),
            requests // 3,
        )
        return kept, fresh
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    print("| protocol | kept alive (us/request) | new connection each (us/request) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="protocol-cost-") as logs:
        results = {
            kind: [measure(kind, args.requests, Path(logs)) for _ in range(args.rounds)]
            for kind in KINDS
        }
    for kind, rounds in results.items():
        print(
            f"| {kind} | {' / '.join(f'{k:.0f}' for k, _ in rounds)} | "
            f"{' / '.join(f'{f:.0f}' for _, f in rounds)} |"
        )


if __name__ == "__main__":
    main()
