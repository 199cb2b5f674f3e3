"""The batch pacer on its own: when a batch input may enter the engine."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.admission import Admission
from gateway.batches.pacing import BatchPacer

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


def interactive_traffic(admission: Admission) -> None:
    """An interactive request was admitted just now (and has finished)."""
    with admission.admit("m", 1):
        pass


async def test_batch_inputs_wait_while_an_interactive_request_is_in_flight() -> None:
    admission = Admission(100)
    held = Held(BatchPacer(admission, busy_tokens=100, quiet_tokens=100, quiet_s=1))
    with admission.admit("m", 1):
        held.ask("a", 5)
        await held.settle()
        assert held.started == []
    await held.settle()
    assert held.started == ["a"]
    await held.release("a")


async def test_under_traffic_the_batch_holds_at_most_the_busy_budget() -> None:
    admission = Admission(100)
    pacer = BatchPacer(admission, busy_tokens=10, quiet_tokens=1000, quiet_s=1)
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
    pacer = BatchPacer(admission, busy_tokens=10, quiet_tokens=1000, quiet_s=1)
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
    pacer = BatchPacer(admission, busy_tokens=10, quiet_tokens=100, quiet_s=0.2)
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
    pacer = BatchPacer(admission, busy_tokens=10, quiet_tokens=10, quiet_s=1)
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
