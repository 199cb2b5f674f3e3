"""The connection cap's default, from the process's open-files limit."""

from __future__ import annotations

from gateway.http.connections import FD_RESERVE, default_max_connections


def test_the_default_cap_is_the_open_files_limit_less_a_reserve() -> None:
    assert default_max_connections(65536) == 65536 - FD_RESERVE
    assert default_max_connections(100) == 16
    assert default_max_connections() > 0
