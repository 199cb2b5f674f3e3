"""The batch store's backends: SQLite in a folder, and PostgreSQL on a real server started
for the session (harness/postgres.py), a fresh database per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.batches.pg_store import PgStore
from gateway.batches.store import Store
from harness.postgres import fresh_database, postgres_server

OpenStore = Callable[[], Store]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL of a PostgreSQL server for this test session."""
    with postgres_server() as url:
        yield url


# The PostgreSQL runs start a server: `process` tests, outside `make test-fast`.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.process)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens a store on one backend's shared state: each call is another process's view
    (its own connection) of the same records and folder."""
    if request.param == "sqlite":
        opened: list[Store] = []

        def sqlite() -> Store:
            opened.append(Store(tmp_path))
            return opened[-1]

        yield sqlite
    else:
        url = fresh_database(request.getfixturevalue("postgres"))
        opened = []

        def pg() -> Store:
            opened.append(PgStore(url, tmp_path))
            return opened[-1]

        yield pg
    for store in opened:
        store.close()
