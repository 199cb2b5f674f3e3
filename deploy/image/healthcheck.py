"""The image's HEALTHCHECK: GET /health on the address the server listens on, taken from
GATEWAY_HOST and GATEWAY_PORT as the server takes it (gateway/config.py), so that moving the
port with the environment moves the check too. Standard library only: it runs every 30 s, and
importing the gateway would cost seconds of CPU each time."""

import os
import sys
import urllib.request

host = os.environ.get("GATEWAY_HOST", "0.0.0.0")
port = os.environ.get("GATEWAY_PORT", "8000")
# A wildcard address listens on loopback too; a named one (an interface's) must be asked there.
if host in ("", "0.0.0.0", "::"):
    host = "127.0.0.1"
elif ":" in host:
    host = f"[{host}]"
try:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"GET http://{host}:{port}/health: {exc}", file=sys.stderr)
    sys.exit(1)
