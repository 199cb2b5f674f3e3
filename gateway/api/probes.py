"""The routes about the server rather than a model's work: liveness (`GET /health`),
readiness (`GET /ready`) and Prometheus metrics (`GET /metrics`). The OpenAPI document is
served by `gateway.api.openapi`, which describes these routes too."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gateway.api.wire import Answer
from gateway.http.responses import json_response
from gateway.state import GatewayRequest, registry_of


class Health(Answer):
    """`GET /health`: `ok`; or, with 503, `down` and the models that are down for good."""

    status: str
    models: list[str] | None = None


class StartProgress(Answer):
    step: str
    elapsed_s: float


class BatchRunnerReport(Answer):
    """The batch runner while it is not running: `retrying` after an error (for
    `failing_for_s` seconds) or `paused` for disk space, with the last error."""

    state: str
    last_error: str | None
    failing_for_s: float | None = None


class Readiness(Answer):
    """`GET /ready`: `ready`, `not ready` or `draining`, and each model's state; while engines
    start, each starting one's step and seconds since its start began; `batch_runner` while
    the batch runner retries after an error or is paused for disk space."""

    status: str
    models: dict[str, str]
    progress: dict[str, StartProgress] | None = None
    batch_runner: BatchRunnerReport | None = None


async def health(request: GatewayRequest) -> Response:
    """GET /health (liveness): 200 while the process can serve or recover (engines may be
    loading or restarting); 503 once a model is down for good, so that the orchestrator
    restarts the process."""
    down = registry_of(request).given_up()
    if down:
        return json_response({"status": "down", "models": down}, 503)
    return json_response({"status": "ok"})


async def ready(request: GatewayRequest) -> Response:
    """GET /ready: 200 once every engine has loaded and can serve, 503 otherwise (also while
    the server drains after SIGTERM, and once the batch runner has failed for minutes).
    `models` holds each model's state; while engines start, `progress` holds each starting
    one's step and seconds since its start began; `batch_runner` appears while the batch
    runner retries after an error or is paused for disk space."""
    registry = registry_of(request)
    states = await registry.readiness()
    progress = registry.progress()
    extra: dict[str, Any] = {"progress": progress} if progress else {}
    runner = request.state["batches"].health
    report = runner.report()
    if report is not None:  # retrying or paused: see gateway/batches/health.py
        extra["batch_runner"] = report
    if request.state["drain"].draining:
        return json_response({"status": "draining", "models": states, **extra}, 503)
    ok = all(state == "ready" for state in states.values()) and runner.ready
    return json_response(
        {"status": "ready" if ok else "not ready", "models": states, **extra}, 200 if ok else 503
    )


async def metrics(request: GatewayRequest) -> Response:
    """GET /metrics: Prometheus text format (behind the API key unless --public-metrics)."""
    body, content_type = request.state["metrics"].exposition()
    return Response(body, media_type=content_type)
