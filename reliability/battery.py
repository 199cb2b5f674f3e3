"""The reliability battery: `make reliability` (or `python -m reliability.battery`).

Starts gateway processes on loopback (the fake engine for everything but one case, the real
vLLM engine for an engine-kill case), drives them, and prints a table of figures. The server
and this generator share the machine's cores (`--pin` puts them on CPU 0 and CPU 1).

    python -m reliability.battery [--soak-s 180] [--skip-real] [--pin] [--only steady,...]
    python -m reliability.battery --render-only

Results: reliability/results/latest.{md,json} and the generated `reliability` section of
docs/reliability.md; --render-only rewrites latest.md and that section from latest.json alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil

from gateway.api.routes import ROUTES
from harness.gateway import Gateway, start_gateway
from harness.load import Run, embeddings_body, open_loop
from harness.markers import write_section
from harness.paths import REPO
from harness.raw_http import raw_status
from harness.stats import percentile
from reliability import attacks, costly_requests, hardening
from reliability.corpus import build_corpus, run_corpus
from reliability.fuzz import fuzz

KEY = "battery-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# The fake engine answers each call after LATENCY_S; the admission bound is BOUND inputs.
# Requests carry 1, 4 or 8 inputs (60/30/10%, mean 2.6), so capacity is about
# BOUND / 2.6 / LATENCY_S requests per second: low enough that a Python generator sharing
# two cores can offer three times as much.
LATENCY_S = 0.5
BOUND = 32
SIZES = ((1, 0.6), (4, 0.3), (8, 0.1))
MEAN_INPUTS = 2.6
CAPACITY_RPS = BOUND / MEAN_INPUTS / LATENCY_S
RESULTS = REPO / "reliability" / "results"
# The generated section of the docs that the battery writes.
SECTION = "reliability"
TARGETS = ("docs/reliability.md",)
SECTIONS = (
    "steady",
    "overload",
    "corpus",
    "fuzz",
    "auth",
    "kill",
    "hang",
    "real_kill",
    "costs",
    "sigterm",
    "disconnect",
    "soak",
    *hardening.SECTIONS,
    *attacks.SECTIONS,
)


class Battery:
    key, auth_headers = KEY, AUTH
    # Connections bounded, engines and workers healing (reliability/hardening.py).
    header_flood = hardening.header_flood
    half_open = hardening.half_open
    heal = hardening.heal
    real_heal = hardening.real_heal
    worker_restart = hardening.worker_restart
    # Hostile requests and injected faults (reliability/attacks.py).
    tokenize_flood = attacks.battery_method("tokenize_flood")
    runner_store_fault = attacks.battery_method("runner_store_fault")
    line_record_fault = attacks.battery_method("line_record_fault")
    output_amplification = attacks.battery_method("output_amplification")
    half_open_flood = attacks.battery_method("half_open_flood")
    probes_at_cap = attacks.battery_method("probes_at_cap")

    def __init__(self, workdir: Path, soak_s: float, pin: bool) -> None:
        self.workdir = workdir
        self.soak_s = soak_s
        self.rows: list[tuple[str, str, str]] = []  # (section, figure, value)
        self.failures: list[str] = []
        self.server_cpu = "0" if pin else None

    # -- helpers -------------------------------------------------------------------------

    def figure(self, section: str, name: str, value: object) -> None:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        self.rows.append((section, name, text))
        print(f"  {section:<11} {name:<44} {text}", flush=True)

    def check(self, section: str, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(f"{section}: {what}")
            print(f"  {section:<11} FAILED: {what}", flush=True)

    def start(
        self, name: str, fakes: dict[str, dict] | None = None, args: list[str] = (), **kwargs
    ) -> Gateway:
        fakes = {"fake": {"latency_s": LATENCY_S}} if fakes is None else fakes
        return start_gateway(
            self.workdir / name,
            fake_models=fakes,
            cpu=self.server_cpu,
            args=[
                "--api-key",
                KEY,
                "--max-inflight-inputs",
                str(BOUND),
                "--log-level",
                "warning",
                *args,
            ],
            **kwargs,
        )

    @staticmethod
    def rss_mb(gateway: Gateway) -> float:
        return psutil.Process(gateway.process.pid).memory_info().rss / 2**20

    def load(
        self,
        gateway: Gateway,
        rate: float,
        seconds: float,
        model: str = "fake",
        seed: int = 0,
        **kwargs,
    ) -> Run:
        rng = random.Random(seed)
        return asyncio.run(
            open_loop(
                gateway.base_url,
                rate,
                seconds,
                lambda i: embeddings_body(model, rng, SIZES),
                headers=AUTH,
                **kwargs,
            )
        )

    # -- sections --------------------------------------------------------------------------

    def steady(self) -> None:
        gateway = self.start("steady")
        try:
            rate = CAPACITY_RPS / 3
            run = self.load(gateway, rate, 20)
        finally:
            gateway.stop()
        statuses = run.statuses()
        ok = run.latencies(lambda o: o.status == 200)
        self.figure("steady", "offered rate (rps, 1/3 of capacity)", rate)
        self.figure("steady", "requests", len(run.outcomes))
        self.figure("steady", "status histogram", dict(statuses))
        self.figure(
            "steady",
            "p50 / p99 latency (ms)",
            f"{percentile(ok, 50) * 1000:.0f} / {percentile(ok, 99) * 1000:.0f}",
        )
        self.check("steady", set(statuses) == {200}, f"non-2xx answers: {dict(statuses)}")

    def overload(self) -> None:
        gateway = self.start("overload")
        try:
            before = self.rss_mb(gateway)
            rate = CAPACITY_RPS * 3
            run = self.load(gateway, rate, 15)
            time.sleep(1)
            after = self.rss_mb(gateway)
        finally:
            gateway.stop()
        statuses = run.statuses()
        total = len(run.outcomes)
        rejected = [o for o in run.outcomes if o.status == 429]
        admitted = run.latencies(lambda o: o.status == 200)
        fives = sum(n for s, n in statuses.items() if not isinstance(s, int) or s >= 500)
        self.figure("overload", "offered rate (rps, ~3x capacity)", rate)
        self.figure("overload", "requests", total)
        self.figure(
            "overload",
            "admitted (200) / refused (429) share",
            f"{len(admitted) / total:.0%} / {len(rejected) / total:.0%}",
        )
        self.figure("overload", "5xx or transport errors", fives)
        self.figure(
            "overload",
            "p99 time to reject (ms), from schedule / from send",
            f"{percentile([o.latency_s for o in rejected], 99) * 1000:.0f} / "
            f"{percentile([o.ended_at - o.started_at for o in rejected], 99) * 1000:.0f}",
        )
        self.figure(
            "overload",
            "p99 generator lag behind schedule (ms)",
            percentile([o.started_at - o.sent_at for o in run.outcomes], 99) * 1000,
        )
        self.figure("overload", "p99 latency of admitted (ms)", percentile(admitted, 99) * 1000)
        self.figure(
            "overload",
            "429s with Retry-After",
            f"{sum(o.retry_after for o in rejected)}/{len(rejected)}",
        )
        self.figure("overload", "server RSS before / after (MB)", f"{before:.0f} / {after:.0f}")
        self.check("overload", fives == 0, f"5xx or transport errors: {dict(statuses)}")
        self.check("overload", bool(rejected), "nothing was refused at 3x capacity")

    def corpus(self) -> None:
        gateway = self.start("corpus", {"fake": {}})
        try:
            cases = build_corpus(ROUTES)
            result = run_corpus(gateway.base_url, cases, AUTH)
            alive = (
                gateway.process.poll() is None
                and httpx.get(gateway.base_url + "/ready").status_code == 200
            )
        finally:
            gateway.stop()
        self.figure(
            "corpus", "cases (routes in the route table)", f"{result.cases} ({len(ROUTES)})"
        )
        self.figure(
            "corpus",
            "must-fail cases answered 4xx",
            f"{result.answered_4xx}/{result.must_fail} "
            f"({result.answered_4xx / result.must_fail:.0%})",
        )
        self.figure(
            "corpus", "error answers in the OpenAI envelope", f"{result.enveloped}/{result.errors}"
        )
        self.figure("corpus", "5xx answers", len(result.server_errors))
        self.figure("corpus", "largest error body (bytes)", result.largest_error_body)
        self.figure("corpus", "process alive and ready afterwards", alive)
        self.check("corpus", not result.server_errors, f"5xx: {result.server_errors[:5]}")
        self.check("corpus", not result.wrong, f"accepted: {result.wrong[:5]}")
        self.check("corpus", alive, "process died or not ready")

    def fuzz(self) -> None:
        gateway = self.start("fuzz", {"fake": {}}, ["--max-inputs", "64"])
        try:
            result = fuzz(gateway.base_url, KEY, max_examples=50)
        finally:
            gateway.stop()
        self.figure("fuzz", "operations / generated cases", f"{result.operations} / {result.cases}")
        self.figure("fuzz", "status histogram", dict(sorted(result.statuses.items())))
        self.figure("fuzz", "server errors", len(result.server_errors))
        self.check("fuzz", not result.server_errors, f"{result.server_errors[:3]}")

    def auth(self) -> None:
        gateway = self.start("auth", {"fake": {}}, ["--api-key", "second-key"])
        headers = {
            "none": {},
            "wrong key": {"Authorization": "Bearer nope"},
            "wrong scheme": {"Authorization": f"Basic {KEY}"},
            "bare key": {"Authorization": KEY},
            "truncated key": {"Authorization": f"Bearer {KEY[:-1]}"},
            "key 1": AUTH,
            "key 2 (lowercase scheme)": {"Authorization": "bearer second-key"},
        }
        open_without_key, refused, accepted, cells = set(), 0, 0, 0
        try:
            with httpx.Client(base_url=gateway.base_url) as client:
                for route in ROUTES:
                    method = min(route.methods - {"HEAD"})
                    body = (
                        {
                            "json": {
                                "model": "fake",
                                "input": "a",
                                "texts": ["a"],
                                "query": "a",
                                "documents": ["a"],
                            }
                        }
                        if method == "POST"
                        else {}
                    )
                    for label, header in headers.items():
                        status = client.request(
                            method, route.path, headers=header, **body
                        ).status_code
                        cells += 1
                        if label.startswith("key"):
                            accepted += status == 200
                        elif status != 401:
                            open_without_key.add(route.path)
                        else:
                            refused += 1
            tricks = [
                "//v1/embeddings",
                "/v1/embeddings/",
                "/v1%2Fembeddings",
                "/health/../v1/embeddings",
                "/health/%2e%2e/v1/embeddings",
                "/ready/..%2Fv1/models",
                "/./v1/embeddings",
                "/V1/embeddings",
                "/v1/embeddings?/health",
                "/v1/embeddings;/health",
            ]
            hosts = ["x/v1?", "a?b", "127.0.0.1/health?", "evil#", "h/health/.."]
            bypasses = [t for t in tricks if raw_status(gateway.port, f"POST {t} HTTP/1.1") == 200]
            bypasses += [
                h
                for h in hosts
                if raw_status(gateway.port, "POST /v1/embeddings HTTP/1.1", h) == 200
            ]
        finally:
            gateway.stop()
        keyed = 2 * len(ROUTES)
        self.figure("auth", "routes x header variants", f"{len(ROUTES)} x {len(headers)} = {cells}")
        self.figure("auth", "routes open without a valid key", sorted(open_without_key))
        self.figure("auth", "missing/wrong key answered 401", refused)
        self.figure("auth", "valid keys accepted", f"{accepted}/{keyed}")
        self.figure(
            "auth",
            "path + Host tricks tried / bypassed",
            f"{len(tricks) + len(hosts)} / {len(bypasses)}",
        )
        self.check(
            "auth", open_without_key <= {"/health", "/ready"}, f"open routes: {open_without_key}"
        )
        self.check("auth", accepted == keyed, "a valid key was refused")
        self.check("auth", not bypasses, f"bypasses: {bypasses}")

    def _fault(self, section: str, fault: dict) -> None:
        """Load on two models; `fault` hits model `a` mid-load; `b` must keep serving."""
        fakes = {"a": {"latency_s": LATENCY_S}, "b": {"latency_s": LATENCY_S}}
        gateway = self.start(
            section,
            fakes,
            [
                "--health-check-interval-s",
                "0.5",
                "--health-check-timeout-s",
                "1",
                "--request-timeout-s",
                "30",
            ],
        )
        try:
            result = asyncio.run(_fault_run(gateway, fault, rate=CAPACITY_RPS / 4))
        finally:
            gateway.stop()
        in_flight, after_a, after_b, flip_s, down_s, hung = result
        self.figure(section, "time until /ready flips to 503 (s)", flip_s)
        self.figure(section, "time until the model is out of service (s)", down_s)
        self.figure(section, "in-flight requests on the faulty model", dict(in_flight))
        self.figure(section, "new requests to the faulty model", dict(after_a))
        self.figure(section, "requests to the healthy model after", dict(after_b))
        self.figure(section, "hung requests (no answer)", hung)
        self.check(section, hung == 0, "requests hung")
        self.check(section, set(after_b) == {200}, f"healthy model affected: {after_b}")
        # 503 until the engine is restarted (after a 1 s backoff), 200 once it is back.
        self.check(section, set(after_a) <= {200, 503}, f"faulty model answers: {after_a}")
        self.check(section, set(in_flight) <= {200, 503}, f"in-flight answers: {in_flight}")

    def kill(self) -> None:
        self._fault("kill", {"dead": True})

    def hang(self) -> None:
        self._fault("hang", {"hang": True})

    def real_kill(self) -> None:
        """The real vLLM engine: kill its EngineCore process mid-load."""
        models = [{"name": "minilm", "path": "builtin:all-MiniLM-L6-v2"}]
        started = time.monotonic()
        gateway = start_gateway(
            self.workdir / "real",
            models=models,
            ready_timeout=600,
            args=["--api-key", KEY, "--log-level", "warning"],
        )
        self.figure("real_kill", "engine start (s)", time.monotonic() - started)
        try:
            result = asyncio.run(_real_kill_run(gateway))
        finally:
            code = gateway.stop()
        in_flight, after, flip_s, hung, answer_ms = result
        self.figure("real_kill", "time until /ready flips to 503 (s)", flip_s)
        self.figure("real_kill", "in-flight requests at the kill", dict(in_flight))
        self.figure("real_kill", "new requests after (status)", dict(after))
        self.figure("real_kill", "max time to answer a new request (ms)", answer_ms)
        self.figure("real_kill", "hung requests", hung)
        self.figure("real_kill", "exit code after SIGTERM", code)
        self.check("real_kill", hung == 0, "requests hung")
        self.check("real_kill", set(after) == {503}, f"after the kill: {after}")

    def costs(self) -> None:
        """Costly requests against the real engine (reliability/costly_requests.py): /health
        latency, RSS growth and time to answer while each runs."""
        model = "all-MiniLM-L6-v2"
        gateway = start_gateway(
            self.workdir / "costs",
            ready_timeout=600,
            models=[{"name": model, "path": "builtin:" + model}],
            args=["--workers", "1", "--log-level", "warning"],
        )
        try:
            measured = costly_requests.measure_all(gateway.base_url, gateway.process.pid, model)
        finally:
            gateway.stop()
        for section, name, value in costly_requests.rows(measured):
            self.figure(section, name, value)
        for cost in measured:
            self.check("costs", cost.status < 500, f"{cost.name}: {cost.status}")
            # 250 ms, not the 100 ms target: the machine's cores are shared (README)
            self.check(
                "costs",
                cost.health_max_ms < 250,
                f"{cost.name}: /health took {cost.health_max_ms:.0f} ms",
            )

    def sigterm(self) -> None:
        gateway = self.start(
            "sigterm", {"fake": {"latency_s": 1.0}}, ["--max-inflight-inputs", "10000"]
        )
        try:
            result = asyncio.run(_sigterm_run(gateway))
        finally:
            code = gateway.stop()
        in_flight, later, drain_s = result
        completed = in_flight.get(200, 0)
        total = sum(in_flight.values())
        self.figure(
            "sigterm",
            "in-flight at SIGTERM completed (200)",
            f"{completed}/{total} ({completed / max(total, 1):.0%})",
        )
        self.figure("sigterm", "requests sent during the drain", dict(later))
        # 503 while draining; once the listener has closed, connections are refused.
        self.check(
            "sigterm", set(later) <= {503, "ConnectError"}, f"answers during the drain: {later}"
        )
        self.figure("sigterm", "SIGTERM to exit (s)", drain_s)
        self.figure("sigterm", "exit code", code)
        self.check("sigterm", completed == total, f"in-flight not completed: {in_flight}")
        self.check("sigterm", code == 0, f"exit code {code}")

    def disconnect(self) -> None:
        gateway = self.start(
            "disconnect", {"fake": {"latency_s": 2.0}}, ["--max-inflight-inputs", "10000"]
        )
        try:
            cancelled = asyncio.run(_disconnect_run(gateway, 200))
            time.sleep(1.5)
            stats = gateway.stats("fake")
        finally:
            gateway.stop()
        self.figure("disconnect", "requests cancelled by the client", cancelled)
        self.figure("disconnect", "engine calls started", stats.get("calls"))
        self.figure("disconnect", "engine calls aborted", stats.get("aborted"))
        self.figure("disconnect", "engine calls completed anyway", stats.get("completed"))
        self.check(
            "disconnect",
            stats.get("aborted") == cancelled,
            f"aborts {stats.get('aborted')} != cancellations {cancelled}",
        )

    def soak(self) -> None:
        gateway = self.start("soak")
        samples: list[tuple[float, float]] = []
        try:

            async def sample(stop: asyncio.Event) -> None:
                start = time.monotonic()
                while not stop.is_set():
                    samples.append((time.monotonic() - start, self.rss_mb(gateway)))
                    await asyncio.sleep(2)

            async def main() -> Run:
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(stop))
                rng = random.Random(1)
                run = await open_loop(
                    gateway.base_url,
                    CAPACITY_RPS / 3,
                    self.soak_s,
                    lambda i: embeddings_body("fake", rng, SIZES, words=(1, 200)),
                    headers=AUTH,
                )
                stop.set()
                await sampler
                return run

            run = asyncio.run(main())
        finally:
            gateway.stop()
        times = np.array([t for t, _ in samples])
        rss = np.array([m for _, m in samples])
        warm = times >= times[-1] / 3
        slope = float(np.polyfit(times[warm], rss[warm], 1)[0]) * 60 if warm.sum() > 2 else 0.0
        third = self.soak_s / 3
        first = [o.latency_s for o in run.outcomes if o.sent_at - run.outcomes[0].sent_at < third]
        last = [
            o.latency_s for o in run.outcomes if o.sent_at - run.outcomes[0].sent_at >= 2 * third
        ]
        statuses = run.statuses()
        self.figure("soak", "duration (s) / requests", f"{self.soak_s:g} / {len(run.outcomes)}")
        self.figure("soak", "status histogram", dict(statuses))
        self.figure("soak", "RSS start / end (MB)", f"{rss[0]:.0f} / {rss[-1]:.0f}")
        self.figure("soak", "RSS slope after warm-up (MB/min)", slope)
        self.figure(
            "soak",
            "p99 first / last third (ms)",
            f"{percentile(first, 99) * 1000:.0f} / {percentile(last, 99) * 1000:.0f}",
        )
        # Random bursts of 8-input requests may pass the admission bound: 429 is the designed
        # answer there; anything 5xx or a transport error is not.
        self.check(
            "soak",
            all(isinstance(k, int) and k in (200, 429) for k in statuses),
            f"answers other than 200/429: {dict(statuses)}",
        )
        self.check("soak", slope < 1.0, f"RSS grows {slope:.2f} MB/min")


async def _poll_ready_flip(base_url: str, since: float, limit_s: float = 30) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while time.monotonic() - since < limit_s:
            if (await client.get("/ready")).status_code == 503:
                return time.monotonic() - since
            await asyncio.sleep(0.02)
    return float("inf")


def _count(outcomes, predicate: Callable) -> dict:
    counts: dict = {}
    for o in outcomes:
        if predicate(o):
            counts[o.status] = counts.get(o.status, 0) + 1
    return counts


async def _fault_run(gateway: Gateway, fault: dict, rate: float):
    def body_for(model: str) -> Callable[[int], dict]:
        rng = random.Random(model)
        return lambda i: embeddings_body(model, rng, SIZES)

    runs = [
        asyncio.create_task(
            open_loop(gateway.base_url, rate, 8, body_for(m), headers=AUTH, timeout_s=40)
        )
        for m in ("a", "b")
    ]
    await asyncio.sleep(3)
    fault_at = time.monotonic()
    gateway.control("a", **fault)
    flip_s = await _poll_ready_flip(gateway.base_url, fault_at)
    down_s = await _poll_model_failed(gateway.base_url, "a", fault_at)
    run_a, run_b = await asyncio.gather(*runs)
    in_flight = _count(run_a.outcomes, lambda o: o.sent_at < fault_at < o.ended_at)
    after_a = _count(run_a.outcomes, lambda o: o.sent_at > fault_at + down_s)
    after_b = _count(run_b.outcomes, lambda o: o.sent_at > fault_at)
    hung = sum(1 for o in run_a.outcomes + run_b.outcomes if not isinstance(o.status, int))
    return in_flight, after_a, after_b, flip_s, down_s, hung


async def _poll_model_failed(base_url: str, model: str, since: float) -> float:
    """Seconds from `since` until /ready reports `model` failed (taken out of service)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while time.monotonic() - since < 30:
            if (await client.get("/ready")).json()["models"].get(model) == "restarting":
                return time.monotonic() - since
            await asyncio.sleep(0.02)
    return float("inf")


async def _real_kill_run(gateway: Gateway):
    rng = random.Random(3)
    run_task = asyncio.create_task(
        open_loop(
            gateway.base_url,
            20,
            10,
            lambda i: embeddings_body("minilm", rng),
            headers=AUTH,
            timeout_s=60,
        )
    )
    await asyncio.sleep(4)
    cores = [
        p
        for p in psutil.Process(gateway.process.pid).children(recursive=True)
        if "EngineCor" in p.name()
    ]
    kill_at = time.monotonic()
    for core in cores:
        core.kill()
    flip_s = await _poll_ready_flip(gateway.base_url, kill_at, 60)
    run = await run_task
    in_flight = _count(run.outcomes, lambda o: o.sent_at < kill_at < o.ended_at)
    after = _count(run.outcomes, lambda o: o.sent_at > kill_at + flip_s)
    answer_ms = (
        max(
            (o.ended_at - o.sent_at for o in run.outcomes if o.sent_at > kill_at + flip_s),
            default=float("nan"),
        )
        * 1000
    )
    hung = sum(1 for o in run.outcomes if not isinstance(o.status, int))
    if not cores:
        after = {"no EngineCore process found": 1}
    return in_flight, after, flip_s, hung, answer_ms


async def _sigterm_run(gateway: Gateway):
    rng = random.Random(4)
    run_task = asyncio.create_task(
        open_loop(gateway.base_url, 30, 4, lambda i: embeddings_body("fake", rng), headers=AUTH)
    )
    await asyncio.sleep(2)
    term_at = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    while gateway.process.poll() is None and time.monotonic() - term_at < 60:
        await asyncio.sleep(0.02)
    exit_at = time.monotonic()
    run = await run_task
    in_flight = _count(run.outcomes, lambda o: o.sent_at < term_at < o.ended_at)
    later = _count(run.outcomes, lambda o: term_at + 0.05 < o.sent_at < exit_at - 0.05)
    return in_flight, later, exit_at - term_at


async def _disconnect_run(gateway: Gateway, n: int, wave: int = 20) -> int:
    """n requests in waves of `wave`, each abandoned by the client (its connection closed)
    0.5 s after sending, while the engine takes 2 s: every one reaches the engine first."""
    cancelled = 0
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers=AUTH, limits=httpx.Limits(max_connections=wave)
    ) as client:

        async def one(i: int) -> bool:
            try:
                await client.post(
                    "/v1/embeddings", timeout=0.5, json={"model": "fake", "input": [f"text {i}"]}
                )
            except httpx.TimeoutException:
                return True
            return False

        for start in range(0, n, wave):
            cancelled += sum(await asyncio.gather(*(one(i) for i in range(start, start + wave))))
    return cancelled


def print_table(rows: list[tuple[str, str, str]], failures: list[str]) -> None:
    width = max(len(name) for _, name, _ in rows)
    print("\n" + "=" * (width + 40))
    print(table_markdown(rows))
    print("\nresult:", "PASS" if not failures else "FAIL\n  " + "\n  ".join(failures))


def table_markdown(rows: list[tuple[str, str, str]] | list[list[str]]) -> str:
    lines = ["| section | figure | value |", "|---|---|---|"]
    lines += [f"| {section} | {name} | {value} |" for section, name, value in rows]
    return "\n".join(lines)


def markdown(saved: dict) -> str:
    """The report of a saved run (latest.json): how it was run, the verdict, the table."""
    date = f"{saved['date_utc']} UTC" if saved.get("date_utc") else "(date not recorded)"
    command = saved.get("command", "python -m reliability.battery")
    verdict = (
        "every check passed" if not saved["failures"] else "FAILED: " + "; ".join(saved["failures"])
    )
    return (
        f"Run {date} (`{command}`), {saved['cpus']} CPUs, Python {saved['python']}: "
        f"{verdict}.\n\n{table_markdown(saved['rows'])}\n"
    )


def save(saved: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(saved, indent=1))
    render_only()


def render_saved() -> str:
    """The report of the run saved in latest.json, with today's report code."""
    return markdown(json.loads((RESULTS / "latest.json").read_text()))


def render_only() -> None:
    """Rewrite latest.md and README's section from latest.json, without running anything."""
    text = render_saved()
    (RESULTS / "latest.md").write_text(text)
    for target in TARGETS:
        changed = write_section(REPO / target, SECTION, text)
        print(f"{'rewrote' if changed else 'unchanged'}: {target} section `{SECTION}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-s", type=float, default=180, help="soak duration (default 180)")
    parser.add_argument("--skip-real", action="store_true", help="skip the real-engine case")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to CPU 0 and the "
        "generator to CPU 1 (only on an otherwise idle machine)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated sections: " + ",".join(SECTIONS)
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite latest.md and README's section from latest.json",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        render_only()
        return 0
    selected = [s for s in SECTIONS if not args.only or s in args.only.split(",")]
    if args.skip_real:
        selected = [s for s in selected if s not in ("real_kill", "real_heal", "costs")]
    pin = args.pin and (os.cpu_count() or 1) > 1
    if pin:
        os.sched_setaffinity(0, {1})  # the server runs on CPU 0
    began, began_wall = time.monotonic(), time.time()
    with tempfile.TemporaryDirectory(prefix="battery-") as tmp:
        battery = Battery(Path(tmp), args.soak_s, pin)
        for section in selected:
            print(f"[{section}]", flush=True)
            try:
                getattr(battery, section)()
            except Exception as exc:  # noqa: BLE001  # a crashed section is a failure, the rest still run
                battery.failures.append(f"{section}: crashed: {exc!r}")
                print(f"  {section} CRASHED: {exc!r}", flush=True)
    battery.figure("battery", "wall time (s)", time.monotonic() - began)
    print_table(battery.rows, battery.failures)
    save(
        {
            "rows": battery.rows,
            "failures": battery.failures,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(began_wall)),
            "command": " ".join(
                ["python -m reliability.battery", *(sys.argv[1:] if argv is None else argv)]
            ),
        }
    )
    return 1 if battery.failures else 0


if __name__ == "__main__":
    sys.exit(main())
