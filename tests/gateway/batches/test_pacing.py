"""The batch pacer on its own: when a batch input may enter the engine."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.batches.pacing import BatchPacer
from gateway.serving.admission import Admission

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Held:
    """Slots taken by tasks that hold them until released."""

    def __init__(self, pacer: BatchPacer) -> None:
        self.pacer = pacer
        self.started: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def ask(self, name: str, tokens: int) -> None:
        self._release[name] = asyncio.Event()

        async def hold() -> None:
            async with self.pacer.slot(tokens):
                self.started.append(name)
                await self._release[name].wait()

        self.tasks[name] = asyncio.create_task(hold())

    async def release(self, name: str) -> None:
        self._release[name].set()
        await self.tasks[name]

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


def pacer_of(admission: Admission, quiet_latency_s: float = 60.0, **budgets: float) -> BatchPacer:
    return BatchPacer(admission, quiet_latency_s=quiet_latency_s, **budgets)  # type: ignore[arg-type]


def interactive_traffic(admission: Admission) -> None:
    """An interactive request was admitted just now (and has finished)."""
    with admission.admit("m", 1):
        pass


async def test_batch_inputs_wait_while_an_interactive_request_is_in_flight() -> None:
    admission = Admission(100)
    held = Held(pacer_of(admission, busy_tokens=100, quiet_tokens=100, quiet_s=1))
    with admission.admit("m", 1):
        held.ask("a", 5)
        await held.settle()
        assert held.started == []
    await held.settle()
    assert held.started == ["a"]
    await held.release("a")


async def test_under_traffic_the_batch_holds_at_most_the_busy_budget() -> None:
    admission = Admission(100)
    pacer = pacer_of(admission, busy_tokens=10, quiet_tokens=1000, quiet_s=1)
    interactive_traffic(admission)
    held = Held(pacer)
    for name, tokens in (("a", 4), ("b", 6), ("c", 1)):
        held.ask(name, tokens)
    await held.settle()
    assert held.started == ["a", "b"] and pacer.inflight_tokens == 10
    await held.release("a")
    await held.settle()
    assert held.started == ["a", "b", "c"] and pacer.inflight_tokens == 7
    await held.release("b")
    await held.release("c")
    assert pacer.inflight_tokens == 0


async def test_an_input_bigger_than_the_budget_starts_alone_and_keeps_its_turn() -> None:
    admission = Admission(100)
    pacer = pacer_of(admission, busy_tokens=10, quiet_tokens=1000, quiet_s=1)
    interactive_traffic(admission)
    held = Held(pacer)
    held.ask("small", 3)
    held.ask("big", 50)
    held.ask("after", 1)  # would fit beside "small", but "big" asked first
    await held.settle()
    assert held.started == ["small"]
    await held.release("small")
    await held.settle()
    assert held.started == ["small", "big"]
    await held.release("big")
    await held.settle()
    assert held.started == ["small", "big", "after"]
    await held.release("after")


async def test_after_a_quiet_spell_the_larger_budget_applies_without_other_events() -> None:
    admission = Admission(100)
    pacer = pacer_of(admission, busy_tokens=10, quiet_tokens=100, quiet_s=0.2)
    pacer.quiet_budget = 100  # as steered in an earlier quiet spell
    interactive_traffic(admission)
    held = Held(pacer)
    held.ask("a", 10)
    held.ask("b", 10)
    await held.settle()
    assert held.started == ["a"] and pacer.budget() == 10
    began = time.monotonic()
    while held.started == ["a"]:
        assert time.monotonic() - began < 2
        await asyncio.sleep(0.01)
    assert held.started == ["a", "b"] and pacer.budget() == 100
    assert time.monotonic() - admission.last_admitted >= 0.2
    await held.release("a")
    await held.release("b")


async def test_a_cancelled_waiter_gives_up_its_turn() -> None:
    admission = Admission(100)
    pacer = pacer_of(admission, busy_tokens=10, quiet_tokens=10, quiet_s=1)
    held = Held(pacer)
    held.ask("a", 10)
    held.ask("gone", 5)
    held.ask("c", 5)
    await held.settle()
    held.tasks["gone"].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await held.tasks["gone"]
    await held.release("a")
    await held.settle()
    assert held.started == ["a", "c"] and pacer.inflight_tokens == 5
    await held.release("c")
    assert pacer.inflight_tokens == 0


class SteppingEngine:
    """An engine that runs in steps, as vLLM's does: each step takes every batch input in it
    when it starts and answers them all when it ends, `overhead_s` plus `per_token_s` a token
    later. Inputs keep asking for slots, so the batch always has work waiting."""

    def __init__(self, pacer: BatchPacer, overhead_s: float, per_token_s: float) -> None:
        self.pacer = pacer
        self.overhead_s = overhead_s
        self.per_token_s = per_token_s
        self.queued: list[tuple[int, asyncio.Event]] = []
        self.step_tokens: list[int] = []

    async def run_input(self, tokens: int) -> None:
        async with self.pacer.slot(tokens):
            done = asyncio.Event()
            self.queued.append((tokens, done))
            await done.wait()

    async def steps(self) -> None:
        while True:
            if not self.queued:
                await asyncio.sleep(0.001)
                continue
            step, self.queued = self.queued, []
            tokens = sum(n for n, _ in step)
            self.step_tokens.append(tokens)
            await asyncio.sleep(self.overhead_s + tokens * self.per_token_s)
            for _, done in step:
                done.set()

    async def inputs(self, tokens: int) -> None:
        while True:
            await self.run_input(tokens)

    async def run_for(self, seconds: float, tokens: int = 5, feeders: int = 200) -> None:
        tasks = [asyncio.create_task(self.steps())]
        tasks += [asyncio.create_task(self.inputs(tokens)) for _ in range(feeders)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_after_a_quiet_spell_the_budget_is_steered_to_the_target_latency() -> None:
    # A step of B tokens takes 5 ms + B * 0.5 ms; an input waits one step: a 50 ms target
    # is met at B = 90 tokens, well inside the busy floor (10) and the ceiling (1000).
    pacer = pacer_of(
        Admission(100), busy_tokens=10, quiet_tokens=1000, quiet_s=1, quiet_latency_s=0.05
    )
    engine = SteppingEngine(pacer, overhead_s=0.005, per_token_s=0.0005)
    await engine.run_for(1.5)
    assert 60 <= pacer.quiet_budget <= 120, pacer.quiet_budget
    recent = engine.step_tokens[-10:]
    assert 50 <= sum(recent) / len(recent) <= 125, recent

    engine.per_token_s = 0.002  # the engine got 4x slower per token (longer texts, a neighbour)
    await engine.run_for(1.5)
    assert 12 <= pacer.quiet_budget <= 35, pacer.quiet_budget  # fixed point 22.5


async def test_the_steered_budget_stays_between_the_busy_budget_and_the_ceiling() -> None:
    fast = pacer_of(Admission(100), busy_tokens=10, quiet_tokens=60, quiet_s=1, quiet_latency_s=1)
    await SteppingEngine(fast, overhead_s=0.001, per_token_s=0.00001).run_for(0.5)
    assert fast.quiet_budget == 60
    slow = pacer_of(
        Admission(100), busy_tokens=10, quiet_tokens=60, quiet_s=1, quiet_latency_s=0.001
    )
    slow.quiet_budget = 60
    await SteppingEngine(slow, overhead_s=0.02, per_token_s=0.001).run_for(0.5)
    assert slow.quiet_budget == 10


async def test_inputs_that_met_interactive_traffic_do_not_steer_the_quiet_budget() -> None:
    admission = Admission(100)
    pacer = pacer_of(admission, busy_tokens=10, quiet_tokens=1000, quiet_s=1, quiet_latency_s=1)
    held = Held(pacer)
    held.ask("quiet until an interactive request came", 5)
    await held.settle()
    interactive_traffic(admission)
    await held.release("quiet until an interactive request came")
    held.ask("during traffic", 5)
    await held.settle()
    await held.release("during traffic")
    assert pacer.quiet_budget == 10
