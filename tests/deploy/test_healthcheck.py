"""deploy/image/healthcheck.py, the images' HEALTHCHECK, run as Docker runs it: it must ask
/health where GATEWAY_HOST and GATEWAY_PORT put the server, and fail when nothing answers."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.manifests import ROOT

# Each test runs the script as a process, as Docker does.
pytestmark = pytest.mark.process

SCRIPT = ROOT / "deploy" / "image" / "healthcheck.py"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthy_on_the_port_the_environment_names(server: http.server.HTTPServer) -> None:
    port = str(server.server_address[1])
    assert check(GATEWAY_HOST="0.0.0.0", GATEWAY_PORT=port).returncode == 0
    assert check(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=port).returncode == 0


def test_unhealthy_where_nothing_answers(server: http.server.HTTPServer) -> None:
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    result = check(GATEWAY_PORT=str(port))
    assert result.returncode == 1
    assert f"GET http://127.0.0.1:{port}/health" in result.stderr
