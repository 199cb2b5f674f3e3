"""Progress of a run: a tqdm bar on a terminal (documents/s, tokens/s, ETA), a log line every
`interval_s` otherwise (a pipe, a file, a CI log), where a bar would be noise."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import IO, Any

log = logging.getLogger("gateway.bulk")

MODES = ("auto", "bar", "log", "none")


class Progress:
    """Counts documents and tokens embedded by this process (rates exclude rows a resumed run
    found done; the bar and the ETA start from them)."""

    def __init__(
        self,
        total: int,
        done: int,
        *,
        mode: str = "auto",
        interval_s: float = 10.0,
        stream: IO[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode, self.total, self.done, self.interval_s = mode, total, done, interval_s
        self.documents = self.tokens = 0
        self.started = time.monotonic()
        self.finished: float | None = None
        self._last_log = self.started
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=done,
                unit="doc",
                unit_scale=True,
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def update(self, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens
        self.done += documents
        if self._bar is not None:
            self._bar.update(documents)
            self._bar.set_postfix_str(
                f"{self.tokens / max(self.seconds, 1e-9):,.0f} tok/s", refresh=False
            )
        elif self.mode == "log" and time.monotonic() - self._last_log >= self.interval_s:
            self._last_log = time.monotonic()
            log.info("%s", self.line())

    def line(self) -> str:
        seconds = max(self.seconds, 1e-9)
        rate = self.documents / seconds
        left = (self.total - self.done) / rate if rate else float("nan")
        share = 100 * self.done / self.total if self.total else 100.0
        return (
            f"{self.done:,}/{self.total:,} documents ({share:.0f}%), {rate:,.1f} docs/s, "
            f"{self.tokens / seconds:,.0f} tokens/s, ETA {_clock(left)}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _clock(seconds: float) -> str:
    if math.isnan(seconds):  # no rate yet
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
