"""Prometheus metrics (`GET /metrics`), with prometheus-client.

One `Metrics` per app. Request metrics are recorded as each request finishes (the request
middleware reports to `observe_request`); inputs in flight as admission changes; engine
state, restarts and cache counters are copied from the registry and the caches once a second
and at every scrape (`sync`), so that new engine states from the registry need no change
here.

With `--workers N` every worker is its own process with its own engines. The server then sets
PROMETHEUS_MULTIPROC_DIR before starting them (`prepare_multiprocess`): prometheus-client
keeps every value in a per-process file there, and a scrape answered by any worker reads all
of them: counters and histograms are summed, and gauges use `livesum` (the sum over live
workers: inputs in flight, admission limit, workers per engine state).

Labels are bounded: `route` is the route template (an unknown path is `unmatched`, never
the raw path), `model` the served name (not the alias the client used; empty when the
request named no served model), `status` the HTTP status, `key` the API key's name (never the
key; the first names the key file gave, later ones counted as `other`:
`gateway.tenancy.keys.MAX_LABELS`).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from adapters.base import EngineError
from gateway.batches.health import STATES as BATCH_RUNNER_STATES
from gateway.http.request_context import Timing
from gateway.serving.cache import CacheStats
from gateway.serving.registry import ModelRegistry
from gateway.tenancy.keys import identified

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "embedding_gateway_"
# From a cached single text (~1 ms) to a large batch or a long rerank (a minute).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
SYNC_INTERVAL_S = 1.0


class Metrics:
    """Every metric of one app, and its exposition."""

    def __init__(
        self, registry: ModelRegistry, routes: Iterable[BaseRoute], admission_limit: int
    ) -> None:
        self.models = registry
        self.routes = list(routes)
        self.multiprocess = MULTIPROC_ENV in os.environ
        self.collectors = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the values live in files; the exposition reads those.
        own = None if self.multiprocess else self.collectors
        if self.multiprocess:
            # prometheus_client leaves its multiprocess module unannotated.
            multiprocess.MultiProcessCollector(self.collectors)  # type: ignore[no-untyped-call]

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=own)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=own, multiprocess_mode="livesum")

        def histogram(name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, registry=own, buckets=LATENCY_BUCKETS)

        self.requests = counter(
            "requests",
            "HTTP requests answered, by route template, served model and status code.",
            ("route", "model", "status"),
        )
        self.duration = histogram(
            "request_duration_seconds",
            "End-to-end request time, arrival to response.",
            ("route", "model"),
        )
        self.queue = histogram(
            "queue_duration_seconds",
            "Arrival to the engine call (reading, "
            "validation, admission), successful engine requests.",
            ("model",),
        )
        self.tokenization = histogram(
            "tokenization_duration_seconds",
            "Tokenizing (and chunking) inside the engine call.",
            ("model",),
        )
        self.inference = histogram(
            "inference_duration_seconds",
            "Engine call time beyond tokenizing (engine queue and forward passes).",
            ("model",),
        )
        self.inputs = counter("inputs", "Embedding inputs processed.", ("model",))
        self.tokens = counter(
            "tokens", "Prompt tokens processed (embeddings and rerank).", ("model",)
        )
        self.documents = counter("rerank_documents", "Rerank documents scored.", ("model",))
        self.inflight = gauge(
            "inflight_inputs",
            "Inputs in flight (admitted, not answered); the autoscaling signal.",
            ("model",),
        )
        self.limit = gauge(
            "admission_limit_inputs",
            "Inputs in flight past which requests get 429 (summed over workers).",
            ("model",),
        )
        self.state = gauge(
            "engine_state",
            "Engines (one per worker) in each state: loading, ready, failed, ...",
            ("model", "state"),
        )
        self.restarts = counter("engine_restarts", "Engine restarts after a failure.", ("model",))
        self.cache = {
            kind: counter(f"cache_{kind}", f"Embedding cache {kind}.", ("model",))
            for kind in ("hits", "misses", "evictions")
        }
        self.deduplicated = counter(
            "deduplicated_inputs",
            "Inputs answered from an identical input of the same request.",
            ("model",),
        )
        self.key_requests = counter(
            "key_requests", "Requests by API key name and status code.", ("key", "status")
        )
        self.key_tokens = counter("key_tokens", "Prompt tokens used, by API key name.", ("key",))
        self.key_rate_limited = counter(
            "key_rate_limited",
            "Requests refused by the key's rate limit (429), by API key name.",
            ("key",),
        )
        self.build = Gauge(
            PREFIX + "build_info",
            "Gateway version, vLLM version (empty without a vLLM engine) and device; always 1.",
            ("version", "vllm_version", "device"),
            registry=own,
            multiprocess_mode="livemax",
        )
        self.batch_runner = gauge(
            "batch_runner_state",
            "Batch runners (one per worker) in each state: running, retrying after a store "
            "or disk error, paused for free disk space.",
            ("state",),
        )
        self.batch_runner_errors = counter(
            "batch_runner_errors", "Store and disk errors the batch runner retried after.", ()
        )
        self.set_batch_runner("running", failed=False)
        self._seen: dict[tuple[int, str], float] = {}  # last cumulative value copied
        self._build_known = False
        for model in registry.models:
            self.limit.labels(model.name).set(admission_limit)
            self.inflight.labels(model.name).set(0)

    # -- recorded as things happen -----------------------------------------------------

    def set_inflight(self, model: str, inputs: int) -> None:
        self.inflight.labels(model).set(inputs)

    def set_batch_runner(self, state: str, failed: bool) -> None:
        for each in BATCH_RUNNER_STATES:
            self.batch_runner.labels(each).set(int(each == state))
        if failed:
            self.batch_runner_errors.inc()

    def observe_request(
        self, scope: Scope, status: int, seconds: float, notes: dict[str, Any], timing: Timing
    ) -> None:
        route = self.route_of(scope)
        model = str(notes.get("model", ""))
        self.requests.labels(route, model, str(status)).inc()
        self.duration.labels(route, model).observe(seconds)
        self._count_key(scope, status, notes)
        if status >= 400 or not model:
            return
        self.count_work(notes)
        if timing.queue_s is not None and timing.inference_s is not None:
            self.queue.labels(model).observe(timing.queue_s)
            self.tokenization.labels(model).observe(timing.tokenization_s)
            self.inference.labels(model).observe(timing.inference_s)

    def _count_key(self, scope: Scope, status: int, notes: dict[str, Any]) -> None:
        tenant = identified(scope)
        if tenant is None or not tenant.name:  # a public path, or a gateway without keys
            return
        self.key_requests.labels(tenant.label, str(status)).inc()
        if notes.get("rate_limited"):
            self.key_rate_limited.labels(tenant.label).inc()
        elif status < 400:
            self.key_tokens.labels(tenant.label).inc(notes.get("tokens", 0))

    def count_work(self, notes: dict[str, Any]) -> None:
        """The inputs, documents and tokens an answered request (or batch line) processed."""
        model = str(notes.get("model", ""))
        if model:
            self.inputs.labels(model).inc(notes.get("inputs", 0))
            self.documents.labels(model).inc(notes.get("documents", 0))
            self.tokens.labels(model).inc(notes.get("tokens", 0))

    def route_of(self, scope: Scope) -> str:
        """The route template; the router sets it, but requests refused before routing (401,
        413, draining) are matched here."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"

    # -- copied from the registry ----------------------------------------------------------

    def sync(self) -> None:
        """Copy engine states, restarts and cache counters into the metrics."""
        loading = False
        for model in self.models.models:
            for state in type(model.state):
                self.state.labels(model.name, state.value).set(int(state is model.state))
            loading |= model.state.value == "loading"
            self._advance(self.restarts, model.name, getattr(model, "restarts", 0))
            stats = getattr(model.engine, "stats", None)
            if isinstance(stats, CacheStats):
                self._advance(self.deduplicated, model.name, stats.deduplicated)
                if getattr(model.engine, "cache", None) is not None:
                    for kind, metric in self.cache.items():
                        self._advance(metric, model.name, getattr(stats, kind))
        if not loading and not self._build_known:
            # After loading: the engines know their version and device then.
            self._build_known = True
            self.build.labels(*build_labels(self.models)).set(1)

    def _advance(self, metric: Counter, model: str, total: float) -> None:
        """Counters only go up: add what a cumulative count gained since the last sync."""
        key = (id(metric), model)
        gained = total - self._seen.get(key, 0)
        if gained > 0:
            metric.labels(model).inc(gained)
        self._seen[key] = max(total, self._seen.get(key, 0))

    async def sync_forever(self, interval_s: float = SYNC_INTERVAL_S) -> None:
        # Every worker syncs on its own: a scrape is answered by one worker only.
        while True:
            self.sync()
            await asyncio.sleep(interval_s)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        self.sync()
        return generate_latest(self.collectors), CONTENT_TYPE_LATEST


def build_labels(models: ModelRegistry) -> tuple[str, str, str]:
    """(gateway version, vLLM version, device), the last two from the first loaded engine
    that reports them (empty for the fake engine)."""
    try:
        version = metadata.version("embedding-gateway")
    except metadata.PackageNotFoundError:
        version = "unknown"
    for model in models.models:
        try:
            facts = model.engine.facts
        except EngineError:  # not loaded (failed): it has no facts to give
            continue
        if facts.engine_version.startswith("vllm "):
            return version, facts.engine_version.removeprefix("vllm "), facts.device
    return version, "", ""


def prepare_multiprocess(workers: int) -> Callable[[], None]:
    """Before workers start: a clean PROMETHEUS_MULTIPROC_DIR (the operator's, emptied, or a
    new temporary one when there are several workers). Returns the cleanup to run at exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):  # a previous run's values
            os.remove(stale)
        return lambda: None
    if workers <= 1:
        return lambda: None
    folder = tempfile.mkdtemp(prefix="embedding-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = folder

    def cleanup() -> None:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)

    return cleanup


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        # prometheus_client leaves its multiprocess module unannotated.
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
