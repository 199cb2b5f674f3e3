"""OpenTelemetry traces, sent with the SDK's OTLP/HTTP exporter, off unless an endpoint is set
(`--otlp-endpoint`, or the standard `OTEL_EXPORTER_OTLP_*` variables: gateway/config/load.py).

Each HTTP request is one server span (route, dialect, model, inputs, tokens, status), child of
the caller's W3C `traceparent` when it sends one, with the trace id in the request's log line.
Its children are built from the request's timing record (gateway/http/request_context.py) once
it has been answered, so the serving path carries no tracing code at all:

    gateway.queue     arrival to the engine call: reading, validating, admission
    gateway.engine    the engine call (gateway.serving.guard.run_guarded)
      gateway.tokenize  the part the engine measured as tokenizing (it tokenizes first)
    gateway.encode    engine answer to response start: dimensions, encoding, serialising

Batch lines and bulk chunks get one span each (`chunk`). Off, nothing here is imported by
the serving path beyond this module, no SDK object exists and the middleware is not installed:
a request pays nothing. The SDK reads its own variables (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, ...).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.dialects import dialect_of
from gateway.http.drain import PROBES
from gateway.http.logs import REQUEST_ID
from gateway.http.request_context import note, notes_of, timing

SERVICE_NAME = "embedding-gateway"
_NO_SPAN = contextlib.nullcontext()
# Request notes (gateway.http.request_context.note) copied onto the request span.
_NOTED = ("model", "inputs", "documents", "tokens")


class Tracing:
    """The SDK's tracer provider with a batching OTLP/HTTP exporter to `url` (a traces URL);
    `shutdown()` sends what is left."""

    def __init__(self, url: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("gateway")
        self.propagator = TraceContextTextMapPropagator()

    def shutdown(self) -> None:
        self.provider.shutdown()


def start_tracing(url: str | None) -> Tracing | None:
    """Tracing to `url`, or None (off) without one."""
    return Tracing(url) if url else None


def chunk(tracing: Tracing | None, name: str, **attributes: Any) -> Any:
    """A context manager around one chunk of background work (a batch line, a bulk batch):
    a span, current inside it, or nothing when tracing is off. Yields the span or None.
    Attributes are named `gateway.<keyword>`."""
    if tracing is None:
        return _NO_SPAN
    return tracing.tracer.start_as_current_span(name, attributes=_named(attributes))


def annotate(span: Any, **attributes: Any) -> None:
    """Set attributes on a span `chunk` yielded (None: tracing is off)."""
    if span is not None:
        span.set_attributes(_named(attributes))


def _named(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {f"gateway.{key}": value for key, value in attributes.items()}


class TracingMiddleware:
    """One server span per HTTP request, with its children from the timing record. Installed
    inside the request-context middleware, whose timing record and request id it reads and
    whose log line gets the trace id."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Probes and scrapes every few seconds would bury the traces worth reading.
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        # perf_counter readings (the timing record's clock) to epoch nanoseconds.
        offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
        request = Request(scope)
        record = timing(request)
        parent = self.tracing.propagator.extract(_trace_headers(scope))
        span = self.tracing.tracer.start_span(
            scope["method"],
            context=parent,
            kind=SpanKind.SERVER,
            start_time=offset_ns + int(record.started * 1e9),
        )
        note(request, trace_id=format(span.get_span_context().trace_id, "032x"))
        status = 0
        answered = 0.0

        async def send_observed(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception as exc:
            span.record_exception(exc)
            status = status or 500
            raise
        finally:
            _describe(span, scope, status or 500)
            if status >= 500 or status == 0:
                span.set_status(Status(StatusCode.ERROR))
            self._children(span, record, answered or time.perf_counter(), offset_ns)
            span.end()

    def _children(self, span: Any, record: Any, answered: float, offset_ns: int) -> None:
        if record.queue_s is None or record.engine_s is None:
            return
        from opentelemetry.trace import set_span_in_context

        def ns(perf: float) -> int:
            return offset_ns + int(perf * 1e9)

        began = record.started + record.queue_s
        ended = began + record.engine_s
        inside = set_span_in_context(span)
        tracer = self.tracing.tracer
        for name, start, end in (
            ("gateway.queue", record.started, began),
            ("gateway.engine", began, ended),
            ("gateway.encode", ended, max(answered, ended)),
        ):
            child = tracer.start_span(name, context=inside, start_time=ns(start))
            if name == "gateway.engine":
                tokenize = tracer.start_span(
                    "gateway.tokenize",
                    context=set_span_in_context(child),
                    start_time=ns(began),
                )
                tokenize.end(end_time=ns(began + min(record.tokenization_s, record.engine_s)))
            child.end(end_time=ns(end))


def _trace_headers(scope: Scope) -> Mapping[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }


def _describe(span: Any, scope: Scope, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    notes = notes_of(scope)
    span.set_attributes(
        {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "http.response.status_code": status,
            "gateway.dialect": dialect_of(scope).api.value,
            "gateway.request_id": REQUEST_ID.get() or "",
            **{f"gateway.{key}": notes[key] for key in _NOTED if key in notes},
        }
    )
