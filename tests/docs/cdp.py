"""A minimal Chrome DevTools Protocol driver for Debian's headless `chromium`: start it, open a
page, evaluate JavaScript in it. The `websockets` client is the only dependency (uvicorn's own);
no browser download, no webdriver."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from typing import Any

import httpx
from websockets.sync.client import connect

from harness.launch import free_port


class Browser:
    def __init__(self) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise RuntimeError("chromium is not installed (make install installs it)")
        self.port = free_port()
        self._profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._ws = connect(self._page_socket(), max_size=None)

    def _page_socket(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list").json()
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("chromium did not open its debugging port")

    def send(self, method: str, **params: Any) -> dict:
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"never true: {expression}")

    def close(self) -> None:
        self._ws.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        self._profile.cleanup()
