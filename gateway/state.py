"""The application's state, typed: what the lifespan hands every request (Starlette copies
it into each request's `request.state`). Routes and the guard take a `GatewayRequest` and read
`request.state["registry"]` and friends with their types known to the type checker."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from starlette.requests import Request

if TYPE_CHECKING:  # the modules below import this one for GatewayRequest
    from gateway.admission import Admission
    from gateway.batches import BatchService
    from gateway.config import Settings
    from gateway.drain import Drain
    from gateway.metrics import Metrics
    from gateway.registry import ModelRegistry
    from gateway.token_ids import Cl100kDecoder


class GatewayState(TypedDict):
    registry: ModelRegistry
    settings: Settings
    admission: Admission
    drain: Drain
    cl100k: Cl100kDecoder
    batches: BatchService
    metrics: Metrics


GatewayRequest = Request[GatewayState]
