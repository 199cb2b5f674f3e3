"""When batch work may enter the engines: the Batch API's side of interactive priority.

An interactive request that arrives while the engine runs a step waits for that step to end
(a step cannot be interrupted, and vLLM's priority scheduling only orders the requests still
queued), so what it waits behind is the batch work in the engine. The pacer bounds that work
by tokens, the unit a step's duration grows with: each batch input (one engine request, see
`adapters.base.background`) starts only while

- no interactive request is in flight (the app's admission count is zero), and
- the batch's tokens in the engines stay within the budget: `--batch-max-inflight-tokens`
  while interactive requests arrive (any in the last `--batch-quiet-after-s`), and a larger,
  steered one once none has for that long. An input bigger than the budget starts alone.

The quiet budget is steered by time, not set in tokens, because the request that arrives
first after a quiet spell waits behind all of it, and what a token costs depends on the
hardware and the model (a count that suits 2 CPU cores would starve a GPU): each batch
input that ran wholly in the quiet spell reports how long the engine held it (waiting
behind the batch work ahead of it, then its own step), and the budget grows while those times stay under `--batch-quiet-latency-ms` and shrinks while
they run over, between the busy budget and `--batch-quiet-inflight-tokens`. A fixed point is
a budget whose inputs come back in about the target time, which is then about what an
interactive request arriving into it waits.

Inputs are served in the order they asked, so a long one is not passed over for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

from gateway.serving.admission import Admission


class BatchPacer:
    """Grants batch inputs their slots (`adapters.base.Pacer`), for every model together:
    on a CPU the engines share the cores, so one engine's batch step delays the others'."""

    def __init__(
        self,
        interactive: Admission,
        busy_tokens: int,
        quiet_tokens: int,
        quiet_s: float,
        quiet_latency_s: float,
    ) -> None:
        self.interactive = interactive
        self.busy_tokens = busy_tokens
        self.quiet_tokens = max(quiet_tokens, busy_tokens)
        self.quiet_s = quiet_s
        self.quiet_latency_s = quiet_latency_s
        # Starts at the busy budget: it grows within a few engine steps if the engine is fast,
        # and the first request after the first quiet spell never meets an untested budget.
        self.quiet_budget = float(busy_tokens)
        self.inflight_tokens = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        interactive.listen(self._interactive_changed)

    def budget(self) -> int:
        """The batch's tokens allowed in the engines now."""
        if not self._quiet_since(time.monotonic()):
            return self.busy_tokens
        return int(self.quiet_budget)

    def _quiet_since(self, moment: float) -> bool:
        """Whether the quiet spell had begun at `moment` (and no request came since)."""
        return moment - self.interactive.last_admitted >= self.quiet_s

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((tokens, turn))
        self._grant()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted, then cancelled: give it back
                self._release(tokens)
            raise  # an abandoned waiter is skipped by `_grant`
        granted = time.monotonic()
        answered = False
        try:
            yield
            answered = True
        finally:
            # Only an answer measures the engine: a cancelled or refused input comes back fast.
            if answered and self._quiet_since(granted):
                self._steer(tokens, time.monotonic() - granted)
            self._release(tokens)

    def _steer(self, tokens: int, held_s: float) -> None:
        """Move the quiet budget toward the size whose inputs take the target time. Each
        input moves it by its own share, so over one budget's worth of inputs the budget is
        scaled by target / observed (at most halved or doubled per round, against noise)."""
        scale = min(max(self.quiet_latency_s / max(held_s, 1e-6), 0.5), 2.0)
        budget = self.quiet_budget + (scale - 1.0) * tokens
        self.quiet_budget = min(max(budget, float(self.busy_tokens)), float(self.quiet_tokens))

    def _interactive_changed(self) -> None:
        # Requests change the admission on the loop; a test holding it from its own thread
        # must not touch the futures from there.
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self._grant()
        else:
            self._loop.call_soon_threadsafe(self._grant)

    def _release(self, tokens: int) -> None:
        self.inflight_tokens -= tokens
        self._grant()

    def _grant(self) -> None:
        """Start waiting inputs, oldest first, while they fit."""
        while self._waiting:
            tokens, turn = self._waiting[0]
            if turn.done():  # its line was cancelled
                self._waiting.popleft()
                continue
            if self.interactive.inflight:
                return  # the admission's listener calls again when it is done
            if self.inflight_tokens and self.inflight_tokens + tokens > self.budget():
                self._when_quiet()
                return  # a release calls again
            self._waiting.popleft()
            self.inflight_tokens += tokens
            turn.set_result(None)

    def _when_quiet(self) -> None:
        """Look again when the quiet budget applies, if nothing else calls first."""
        if self._quiet_since(time.monotonic()):
            return
        if self._timer is not None:
            self._timer.cancel()
        at = self.interactive.last_admitted + self.quiet_s
        self._timer = self._loop.call_later(max(at - time.monotonic(), 0.0) + 0.001, self._grant)
