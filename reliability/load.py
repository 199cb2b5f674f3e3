"""An open-loop HTTP load generator: requests are sent at their scheduled times whatever the
server does, and latency is measured from the scheduled time (no coordinated omission)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    status: int | str  # HTTP status, or the transport error's name
    latency_s: float  # from the scheduled send time to the end of the answer
    sent_at: float  # monotonic: when it was scheduled
    ended_at: float
    started_at: float = 0.0  # when the generator actually sent it (lags under its own load)
    retry_after: bool = False
    error_code: str | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    offered_rps: float = 0.0
    duration_s: float = 0.0

    def statuses(self) -> Counter:
        return Counter(o.status for o in self.outcomes)

    def latencies(self, predicate: Callable[[Outcome], bool] = lambda o: True) -> list[float]:
        return sorted(o.latency_s for o in self.outcomes if predicate(o))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def embeddings_body(
    model: str,
    rng: random.Random,
    sizes=((1, 0.7), (4, 0.2), (16, 0.1)),
    words: tuple[int, int] = (3, 40),
) -> dict:
    (count,) = rng.choices([s for s, _ in sizes], weights=[w for _, w in sizes])
    texts = [
        " ".join(f"w{rng.randrange(5000)}" for _ in range(rng.randint(*words)))
        for _ in range(count)
    ]
    return {"model": model, "input": texts}


async def open_loop(
    base_url: str,
    rate: float,
    duration_s: float,
    body: Callable[[int], dict],
    *,
    headers: dict | None = None,
    timeout_s: float = 60,
    path: str = "/v1/embeddings",
    stop: asyncio.Event | None = None,
) -> Run:
    run = Run(offered_rps=rate, duration_s=duration_s)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout_s, headers=headers or {}
    ) as client:

        async def one(scheduled: float, payload: dict) -> None:
            started = time.monotonic()
            try:
                response = await client.post(path, json=payload)
                status: int | str = response.status_code
                retry = "retry-after" in response.headers
                code = None
                if status >= 400:
                    try:
                        code = response.json()["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = "not-an-envelope"
            except httpx.HTTPError as exc:
                status, retry, code = type(exc).__name__, False, None
            ended = time.monotonic()
            run.outcomes.append(
                Outcome(status, ended - scheduled, scheduled, ended, started, retry, code)
            )

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * duration_s)):
            if stop is not None and stop.is_set():
                break
            scheduled = start + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, body(i))))
        await asyncio.gather(*tasks)
    return run
