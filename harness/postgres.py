"""A throwaway PostgreSQL server in a temporary folder, for the batch store's fleet backend:
the real server (Debian's `postgresql` package, or binaries on PATH), never a mock.

PostgreSQL refuses to run as root; as root (CI), the server runs as the unprivileged user
`nobody`, which owns the temporary folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from harness.launch import free_port

_USER = "nobody"


def server_binaries() -> Path | None:
    """The folder with initdb and pg_ctl: the newest Debian install, else PATH's."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if debian:
        return Path(debian[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running server on 127.0.0.1, stopped and removed on exit; yields the URL of its
    `postgres` database (user `gateway`, no password)."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    as_user: list[str] = []
    if os.getuid() == 0:
        shutil.chown(folder, _USER)
        as_user = ["runuser", "-u", _USER, "--"]
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, cwd=folder)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "gateway", "-A", "trust",
            "-E", "UTF8", "--no-locale")  # fmt: skip
        # fsync off: the tests kill gateways, never the database's machine.
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
            "-t", "60", "start")  # fmt: skip
        try:
            yield f"postgresql://gateway@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name
