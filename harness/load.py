"""HTTP load, two ways.

Closed loop (`closed_loop`, the benchmark's): `concurrency` clients, each sending its next
request as soon as the previous one answered, for a fixed time; the same bodies go to every
server. aiohttp on uvloop keeps the client's own cost per request to tens of microseconds;
responses are read but not parsed (one is parsed first, to check the server answers what was
asked). The client's CPU time is measured, because it shares the cores with the servers.

Open loop (`open_loop`, the battery's): requests are sent at their scheduled times whatever
the server does, and latency is measured from the scheduled time (no coordinated omission).

The percentiles of either's latencies come from `harness.stats.percentile`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
import psutil

from harness.stats import percentile

_HEADERS = {"Content-Type": "application/json"}


# -- closed loop ---------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """One pre-serialized request body and what it carries."""

    data: bytes
    texts: int
    tokens: int


@dataclass
class CellResult:
    requests: int
    texts: int
    tokens: int
    wall_s: float
    texts_per_s: float
    tokens_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_pct: float  # of one core
    server_cpu_pct: float  # of one core, the server process and its children

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _own_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def tree_cpu_by_name(process: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) of `process` and each process under it, by process name
    (the idle-CPU benchmark reports them so)."""
    seconds: dict[str, float] = {}
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            name = p.name()
        except psutil.NoSuchProcess:
            continue
        seconds[name] = seconds.get(name, 0.0) + times.user + times.system
    return seconds


def _tree_cpu(process: psutil.Process | None) -> float:
    return 0.0 if process is None else sum(tree_cpu_by_name(process).values())


async def closed_loop(
    url: str,
    bodies: Sequence[Body],
    *,
    concurrency: int,
    duration_s: float,
    server: psutil.Process | None = None,
    max_requests: int | None = None,
) -> CellResult:
    """Drive `url` with `concurrency` closed-loop clients for `duration_s` (after one warm-up
    request per client). In-flight requests finish after the deadline and are counted, so the
    throughput is work done over the time it took."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _check(session, url, bodies[0])
        await asyncio.gather(
            *(_post(session, url, bodies[i % len(bodies)]) for i in range(concurrency))
        )
        latencies: list[float] = []
        counters = {"next": 0, "texts": 0, "tokens": 0, "errors": 0}
        me = psutil.Process()
        cpu0, server0 = _own_cpu(me), _tree_cpu(server)
        start = time.perf_counter()
        deadline = start + duration_s

        async def client() -> None:
            while time.perf_counter() < deadline:
                if max_requests is not None and counters["next"] >= max_requests:
                    return
                body = bodies[counters["next"] % len(bodies)]
                counters["next"] += 1
                t0 = time.perf_counter()
                ok = await _post(session, url, body)
                latencies.append(time.perf_counter() - t0)
                if ok:
                    counters["texts"] += body.texts
                    counters["tokens"] += body.tokens
                else:
                    counters["errors"] += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = _own_cpu(me) - cpu0
        server_cpu = _tree_cpu(server) - server0
    done = len(latencies) - counters["errors"]
    return CellResult(
        requests=len(latencies),
        texts=counters["texts"],
        tokens=counters["tokens"],
        wall_s=round(wall, 3),
        texts_per_s=counters["texts"] / wall,
        tokens_per_s=counters["tokens"] / wall,
        requests_per_s=done / wall,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        errors=counters["errors"],
        client_cpu_pct=100 * cpu / wall,
        server_cpu_pct=100 * server_cpu / wall,
    )


async def _post(session: aiohttp.ClientSession, url: str, body: Body) -> bool:
    async with session.post(url, data=body.data, headers=_HEADERS) as response:
        await response.read()
        return response.status == 200


async def _check(session: aiohttp.ClientSession, url: str, body: Body) -> None:
    async with session.post(url, data=body.data, headers=_HEADERS) as response:
        raw = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {raw[:500]!r}")
        answer = orjson.loads(raw)
    # TEI's routes answer a bare list, one item per input.
    if isinstance(answer, list):
        rows = answer
    else:
        rows = answer.get("data") or answer.get("results") or []
    if len(rows) not in (body.texts, orjson.loads(body.data).get("top_n")):
        raise RuntimeError(f"{url} answered {len(rows)} rows for {body.texts} inputs")


async def probe(url: str, body: bytes) -> tuple[int, bytes]:
    """One request; (status, body). Used to find out whether a route exists."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session,
        session.post(url, data=body, headers=_HEADERS) as response,
    ):
        return response.status, await response.read()


# -- open loop -----------------------------------------------------------------------


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

    def statuses(self) -> Counter[int | str]:
        return Counter(o.status for o in self.outcomes)

    def latencies(self, predicate: Callable[[Outcome], bool] = lambda o: True) -> list[float]:
        return sorted(o.latency_s for o in self.outcomes if predicate(o))


def embeddings_body(
    model: str,
    rng: random.Random,
    sizes: Sequence[tuple[int, float]] = ((1, 0.7), (4, 0.2), (16, 0.1)),
    words: tuple[int, int] = (3, 40),
) -> dict[str, Any]:
    """A /v1/embeddings body of `count` texts of random words, `count` drawn from `sizes`
    ((count, weight) pairs)."""
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
    body: Callable[[int], dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60,
    path: str = "/v1/embeddings",
    stop: asyncio.Event | None = None,
) -> Run:
    run = Run(offered_rps=rate, duration_s=duration_s)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout_s, headers=headers or {}
    ) as client:

        async def one(scheduled: float, payload: dict[str, Any]) -> None:
            started = time.monotonic()
            try:
                response = await client.post(path, json=payload)
                status: int | str = response.status_code
                retry = "retry-after" in response.headers
                code = None
                if response.status_code >= 400:
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
