"""vLLM's model compilation on CPU, on or off, in the CPU image: time to /ready and texts/s.

Both containers start at the same moment and are then measured in turns (a closed loop on one,
then on the other, three times), so that load from elsewhere on the machine falls on both
alike. Run as the pod runs (deploy/image/smoke.py's flags); the figures go in
docs/container.md.

    PYTHONPATH=. .venv/bin/python deploy/image/compare_compile.py"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import smoke  # type: ignore[import-not-found]

VARIANTS = {"compiled": "{}", "eager": '{"compilation_config": {"mode": 0}}'}


def main() -> None:
    print(datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), os.getloadavg())
    urls, names, ready = {}, {}, {}
    with tempfile.TemporaryDirectory() as files:
        Path(files).chmod(0o755)
        started = time.monotonic()
        for variant, kwargs in VARIANTS.items():
            port = smoke.free_port()
            folder = Path(files) / variant
            folder.mkdir()
            flags, args = smoke.run_flags(port, folder)
            names[variant] = f"embedding-gateway-compile-{variant}-{os.getpid()}"
            urls[variant] = f"http://127.0.0.1:{port}"
            subprocess.run(
                ["docker", "run", "--detach", f"--name={names[variant]}", *flags,
                 f"--env=GATEWAY_ENGINE_KWARGS={kwargs}", smoke.IMAGE, *args],
                check=True, capture_output=True,
            )  # fmt: skip
        try:
            while len(ready) < len(VARIANTS):
                for variant, url in urls.items():
                    if variant not in ready:
                        try:
                            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                                ready[variant] = time.monotonic() - started
                        except httpx.TransportError:
                            pass
                time.sleep(0.5)
            print("/ready after (both started together):", ready)
            rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for _ in range(3):
                for variant, url in urls.items():
                    rates[variant].append(smoke.throughput(url, seconds=10))
            for variant, values in rates.items():
                print(f"{variant}: texts/s per turn {[round(v) for v in values]}")
            print("load average after:", os.getloadavg())
        finally:
            for name in names.values():
                smoke.docker("rm", "--force", "--volumes", name, check=False)


if __name__ == "__main__":
    main()
