"""Progress: a bar on a terminal, log lines elsewhere, with documents/s, tokens/s and ETA."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import struct
import termios

import pytest

from gateway.bulk.progress import Progress


def test_a_terminal_gets_a_bar_with_rates_and_eta() -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with os.fdopen(slave, "w") as terminal:
        progress = Progress(1000, 200, stream=terminal)
        assert progress.mode == "bar"
        progress.update(300, 24_000)
        progress.close()
    screen = _read_all(master)
    assert "500/1.00k" in screen and "doc/s" in screen and "tok/s" in screen
    assert "<" in screen  # tqdm's "elapsed<remaining"


def _read_all(master: int) -> str:
    # One read returns what the terminal holds so far, maybe not the bar's last redraw: read
    # until the closed slave side ends it (EIO on Linux).
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode()


def test_elsewhere_log_lines_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.bulk")
    progress = Progress(1000, 0, stream=io.StringIO(), interval_s=0)
    assert progress.mode == "log"
    progress.update(250, 20_000)
    progress.update(250, 20_000)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].startswith("500/1,000 documents (50%), ")
    assert "docs/s" in lines[1] and "tokens/s" in lines[1] and "ETA 0:" in lines[1]


def test_log_lines_wait_for_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.bulk")
    progress = Progress(1000, 0, stream=io.StringIO(), interval_s=3600)
    progress.update(10, 100)
    assert caplog.records == []
