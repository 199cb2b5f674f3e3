"""The batch runner's health: whether its loop is running, retrying after a store or disk
error (with the last error, and since when), or paused because the disk is nearly full.

The runner never stops on such an error: it logs it and tries again after a backoff, so a
full disk or a locked database heals once the cause goes away. /ready reports a runner that
is not running in a `batch_runner` field, and answers 503 only once it has been failing for
longer than FAILING_BOUND_S: one failed write is no reason to take the process out of a
load balancer, but a Files and Batches API that has not worked for minutes needs someone to
look (and a restart may fix a broken database connection). A pause is the operator's to fix
(free disk space) and does not fail /ready; /metrics has the state and the error count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

STATES = ("running", "retrying", "paused")
FAILING_BOUND_S = 120.0
_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 30.0


class RunnerHealth:
    """The runner's state; `on_change(state, failed)` reports to /metrics (`failed`: True
    once per failure)."""

    def __init__(
        self,
        on_change: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = "running"
        self.last_error: str | None = None
        self.failures = 0  # in a row
        self.failing_since: float | None = None
        self._on_change = on_change or (lambda state, failed: None)
        self._clock = clock

    def ok(self) -> None:
        if self.state != "running":
            self.state, self.failures, self.failing_since = "running", 0, None
            self._on_change(self.state, False)

    def failed(self, error: BaseException) -> float:
        """Record a failed loop iteration; the seconds to wait before the next."""
        self.last_error = f"{type(error).__name__}: {error}"[:500]
        if self.failing_since is None:
            self.failing_since = self._clock()
        self.state = "retrying"
        self.failures += 1
        self._on_change(self.state, True)
        return self._delay()

    def paused(self, reason: str) -> float:
        """Record a pause for free disk space; the seconds to wait before looking again."""
        self.last_error = reason
        self.state, self.failing_since = "paused", None
        self.failures += 1
        self._on_change(self.state, False)
        return self._delay()

    @property
    def failing_for(self) -> float:
        return 0.0 if self.failing_since is None else self._clock() - self.failing_since

    @property
    def ready(self) -> bool:
        return self.state != "retrying" or self.failing_for <= FAILING_BOUND_S

    def report(self) -> dict[str, Any] | None:
        """What /ready shows; None while running."""
        if self.state == "running":
            return None
        report: dict[str, Any] = {"state": self.state, "last_error": self.last_error}
        if self.state == "retrying":
            report["failing_for_s"] = round(self.failing_for, 1)
        return report

    def _delay(self) -> float:
        return float(min(_FIRST_DELAY_S * 2 ** (self.failures - 1), _MAX_DELAY_S))
