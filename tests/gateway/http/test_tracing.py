"""OpenTelemetry traces, received by a real OTLP/HTTP receiver (POST /v1/traces, decoded as
the protobuf `ExportTraceServiceRequest`): a server span per request with its children, the
caller's `traceparent`, the trace id in the access log, batch lines and bulk chunks, and
nothing at all when it is off (the options that switch it on: tests/gateway/config)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from adapters.fake import FakeEngine
from gateway.app import create_app
from gateway.bulk.pipeline import Job, run
from gateway.config import Settings
from gateway.http.tracing import Tracing, TracingMiddleware
from gateway.serving.registry import EngineState, ModelRegistry, ServedModel
from tests.conftest import serving
from tests.gateway.batches.test_api import create, jsonl, upload, wait_status

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int
    start: int
    end: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


class Receiver:
    """An OTLP/HTTP trace receiver on a free local port."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.take(self.path, ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path: str, request: ExportTraceServiceRequest) -> None:
        assert path == "/v1/traces"
        self.posts += 1
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(
                        Span(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.kind,
                            s.status.code,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            _attributes(s.attributes),
                            resource,
                        )
                    )

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 10) -> list[Span]:
        deadline = time.monotonic() + timeout_s
        while len(self.named(name)) < count:
            assert time.monotonic() < deadline, [s.name for s in self.spans]
            time.sleep(0.02)
        return self.named(name)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    # The SDK's own variable: batches go out every 50 ms instead of every 5 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    server = Receiver()
    yield server
    server.close()


def traced(receiver: Receiver, **options: Any) -> Settings:
    return Settings(otlp_endpoint=receiver.url + "/v1/traces", **options)


def test_a_request_is_a_server_span_under_the_callers_trace_with_its_parts(receiver) -> None:
    with serving(traced(receiver)) as client:
        response = client.post(
            "/v1/embeddings",
            json={"model": "fake", "input": ["a b", "c"]},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "x-request-id": "req-1"},
        )
        assert response.status_code == 200
        (span,) = receiver.wait_for("POST /v1/embeddings")
    assert (span.trace_id, span.parent_id, span.kind) == (TRACE_ID, PARENT_ID, SERVER)
    assert span.attributes == {
        "http.route": "/v1/embeddings",
        "http.request.method": "POST",
        "url.path": "/v1/embeddings",
        "http.response.status_code": 200,
        "gateway.dialect": "openai",
        "gateway.request_id": "req-1",
        "gateway.model": "fake",
        "gateway.inputs": 2,
        "gateway.tokens": 7,
    }
    assert span.resource["service.name"] == "embedding-gateway"
    children = {s.name: s for s in receiver.spans if s.parent_id == span.span_id}
    assert set(children) == {"gateway.queue", "gateway.engine", "gateway.encode"}
    (tokenize,) = receiver.named("gateway.tokenize")
    assert tokenize.parent_id == children["gateway.engine"].span_id
    queue, engine, encode = (children[f"gateway.{n}"] for n in ("queue", "engine", "encode"))
    assert span.start == queue.start <= queue.end <= engine.start
    assert engine.start == tokenize.start <= tokenize.end <= engine.end <= encode.start
    assert encode.end <= span.end


def test_the_trace_id_is_in_the_access_log(receiver, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"), serving(traced(receiver)) as c:
        c.post(
            "/v1/embeddings",
            json={"model": "fake", "input": "a"},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
    (line,) = [r for r in caplog.records if "/v1/embeddings" in r.getMessage()]
    assert f"trace_id={TRACE_ID}" in line.getMessage()
    assert line.trace_id == TRACE_ID  # the JSON format's key


def test_refusals_are_traced_with_their_status_and_dialect(receiver) -> None:
    with serving(traced(receiver, api_keys=("k",))) as client:
        client.post("/api/embed", json={"model": "fake", "input": "a"})
        client.post(
            "/api/embed",
            json={"model": "nope", "input": "a"},
            headers={"Authorization": "Bearer k"},
        )
        (unknown,) = receiver.wait_for("POST /api/embed")
        (refused,) = receiver.wait_for("POST")  # refused before routing: no route
    assert unknown.attributes["http.response.status_code"] == 404
    assert unknown.attributes["gateway.dialect"] == "ollama"
    assert refused.attributes["http.response.status_code"] == 401
    assert unknown.status != ERROR and refused.status != ERROR  # the client's errors


def test_an_engine_failure_marks_the_span_as_an_error(receiver) -> None:
    engine = FakeEngine(nan_marker="POISON")
    with serving(traced(receiver), fake=engine) as client:
        client.post("/v1/embeddings", json={"model": "fake", "input": "POISON"})
        (span,) = receiver.wait_for("POST /v1/embeddings")
    assert span.attributes["http.response.status_code"] >= 500
    assert span.status == ERROR


def test_health_probes_are_not_traced(receiver) -> None:
    with serving(traced(receiver)) as client:
        client.get("/health")
        client.get("/ready")
        client.get("/v1/models")
        receiver.wait_for("GET /v1/models")
    assert [s.name for s in receiver.spans] == ["GET /v1/models"]


def test_the_service_name_is_otel_service_name_when_set(receiver, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "search-embeddings")
    with serving(traced(receiver)) as client:
        client.get("/v1/models")
        (span,) = receiver.wait_for("GET /v1/models")
    assert span.resource["service.name"] == "search-embeddings"


def test_spans_still_batched_are_sent_at_shutdown(receiver, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    with serving(traced(receiver)) as client:
        client.get("/v1/models")
        time.sleep(0.2)
        assert receiver.spans == []
    assert len(receiver.named("GET /v1/models")) == 1


def test_tracing_is_off_and_absent_without_an_endpoint(receiver) -> None:
    registry = ModelRegistry([ServedModel("fake", (), FakeEngine())])
    app = create_app(registry, Settings())
    assert app.state.gateway["tracing"] is None
    assert all(m.cls is not TracingMiddleware for m in app.user_middleware)
    with serving() as client:
        client.post("/v1/embeddings", json={"model": "fake", "input": "a"})
    time.sleep(0.2)
    assert receiver.posts == 0


def test_batch_lines_get_a_span_each(receiver, tmp_path: Path) -> None:
    lines = jsonl({"model": "fake", "input": "t x"}, {"model": "missing", "input": "y"})
    settings = traced(receiver, api_keys=("batch-key",), batch_dir=str(tmp_path / "data"))
    with serving(settings) as client:
        batch_id = create(client, upload(client, lines).json()["id"]).json()["id"]
        wait_status(client, batch_id, ("completed",))
        spans = receiver.wait_for("batch line", 2)
    by_line = {s.attributes["gateway.line"]: s.attributes for s in spans}
    assert by_line[1] == {
        "gateway.batch": batch_id,
        "gateway.line": 1,
        "gateway.ok": True,
        "gateway.tokens": 4,
    }
    assert by_line[2]["gateway.ok"] is False


def test_bulk_chunks_get_a_span_each(receiver) -> None:
    engine = FakeEngine(dimension=4)
    engine.started = True
    tracing = Tracing(receiver.url + "/v1/traces")
    job = Job(
        ServedModel("fake", (), engine, state=EngineState.READY),
        "fake",
        batch_tokens=10,
        tracing=tracing,
    )
    # 4 tokens each, estimated 4.5 before any is embedded: two per chunk.
    texts = [f"document {i}" for i in range(6)]
    asyncio.run(run(job, list(enumerate(texts)), 0, lambda result: None))
    tracing.shutdown()
    spans = sorted(receiver.named("bulk chunk"), key=lambda s: s.attributes["gateway.first_row"])
    assert [s.attributes for s in spans] == [
        {"gateway.first_row": row, "gateway.documents": 2, "gateway.tokens": 8} for row in (0, 2, 4)
    ]
