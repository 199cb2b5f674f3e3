"""Server CPU per request of uvicorn's HTTP protocols on the gateway (fake engine): uvicorn's
httptools, the gateway's bounded subclass of it (gateway/connections.py), and uvicorn's h11.

    python -m bench.protocol_cost [--requests 3000] [--rounds 2]

Measured as the server process's CPU time (psutil) over kept-alive requests, then over
requests on a new connection each, so that the client's own cost does not count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx
import psutil

from reliability.server import free_port

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


def measure(kind: str, requests: int) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.protocol_cost", "--serve", kind, str(port)], cwd=os.getcwd()
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
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
        server.terminate()
        server.wait()


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
    results = {kind: [measure(kind, args.requests) for _ in range(args.rounds)] for kind in KINDS}
    for kind, rounds in results.items():
        print(
            f"| {kind} | {' / '.join(f'{k:.0f}' for k, _ in rounds)} | "
            f"{' / '.join(f'{f:.0f}' for _, f in rounds)} |"
        )


if __name__ == "__main__":
    main()
