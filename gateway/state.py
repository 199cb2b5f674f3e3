"""The application's state, typed: what the lifespan hands every request (Starlette copies
it into each request's `request.state`). Routes and the guard take a `GatewayRequest` and read
`request.state["registry"]` and friends with their types known to the type checker; the
accessors below name the two that most routes read."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from starlette.requests import Request

if TYPE_CHECKING:  # the state holds objects of the layers above; only their types are named
    from gateway.batches import BatchService
    from gateway.config import Settings
    from gateway.http.drain import Drain
    from gateway.http.tracing import Tracing
    from gateway.metrics import Metrics
    from gateway.serving.admission import Admission
    from gateway.serving.registry import ModelRegistry
    from gateway.serving.token_ids import Cl100kDecoder


class GatewayState(TypedDict):
    registry: ModelRegistry
    settings: Settings
    admission: Admission
    drain: Drain
    cl100k: Cl100kDecoder
    batches: BatchService
    metrics: Metrics
    tracing: Tracing | None  # None: tracing is off


GatewayRequest = Request[GatewayState]


def registry_of(request: GatewayRequest) -> ModelRegistry:
    """The served models."""
    return request.state["registry"]


def settings_of(request: GatewayRequest) -> Settings:
    """The server's settings (a batch line's: without a request timeout)."""
    return request.state["settings"]
