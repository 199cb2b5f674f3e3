"""Log lines: JSON or text, the request id on every line of a request, vLLM routed through."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
from collections.abc import Iterator, Sequence

import pytest

from adapters.base import EmbeddingBatch, EmbedOptions, Prompt
from adapters.fake import FakeEngine
from gateway.config import ConfigError, load_settings
from gateway.http import logs
from tests.conftest import serving


class ChattyEngine(FakeEngine):
    """Logs from inside the engine call, as an adapter or a library would."""

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        logging.getLogger("adapters.chatty").info("embedding %d prompts", len(prompts))
        return await super().embed(prompts, options)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON lines of every logger, as `configure` sets them up, into a buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    handler, level = logs.handler("json", stream), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_every_line_of_a_request_carries_its_id(captured: io.StringIO) -> None:
    with serving(fake=ChattyEngine()) as client:
        response = client.post(
            "/v1/embeddings",
            json={"model": "fake", "input": ["a", "b"]},
            headers={"x-request-id": "req-42"},
        )
        assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    engine_line = next(line for line in lines if line["logger"] == "adapters.chatty")
    assert engine_line["message"] == "embedding 2 prompts"
    assert engine_line["request_id"] == "req-42"
    access = next(line for line in lines if line["logger"] == "gateway.access")
    assert access["request_id"] == "req-42"
    assert {
        "method": "POST",
        "path": "/v1/embeddings",
        "status": 200,
        "model": "fake",
        "inputs": 2,
    }.items() <= access.items()
    assert {"time", "level", "duration_ms", "queue_ms", "inference_ms"} <= access.keys()
    # Outside a request there is no id.
    startup = [line for line in lines if line["logger"] == "gateway.registry"]
    assert startup and all(line["request_id"] is None for line in startup)


def test_text_lines_tag_the_request_id() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.text")
    logger.addHandler(logs.handler("text", stream))
    try:
        token = logs.REQUEST_ID.set("abc")
        logger.warning("inside")
        logs.REQUEST_ID.reset(token)
        logger.warning("outside")
    finally:
        logger.handlers.clear()
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("WARNING tests.text: [abc] inside")
    assert outside.endswith("WARNING tests.text: outside")


def test_auto_is_json_off_a_terminal() -> None:
    # pytest captures stderr: not a terminal, as in a container.
    assert logs.resolve_format("auto") == "json"
    assert logs.resolve_format("text") == "text"


def test_log_format_option() -> None:
    assert load_settings({}, environ={}).log_format == "auto"
    assert load_settings({"log_format": "JSON"}, environ={}).log_format == "json"
    assert load_settings({}, environ={"GATEWAY_LOG_FORMAT": "text"}).log_format == "text"
    with pytest.raises(ConfigError, match="--log-format"):
        load_settings({"log_format": "xml"}, environ={})


def test_vllm_logs_are_routed_through_the_gateway_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the environment for this test: route_vllm_logs sets variables that, left in
    # the test process, would point later gateway subprocesses at the file removed below.
    monkeypatch.setattr(os, "environ", {**os.environ})
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    logs.route_vllm_logs("warning", "json")
    path = os.environ["VLLM_LOGGING_CONFIG_PATH"]
    assert os.environ["VLLM_LOGGING_LEVEL"] == "WARNING"
    # What vLLM does with the file in each of its processes.
    with open(path) as file:
        config = json.load(file)
    config["loggers"] = {"tests.vllm-standin": config["loggers"]["vllm"]}
    logging.config.dictConfig(config)
    logger = logging.getLogger("tests.vllm-standin")
    try:
        (handler,) = logger.handlers
        assert logger.level == logging.WARNING and not logger.propagate
        assert any(isinstance(f, logs.RequestIdFilter) for f in handler.filters)
        assert type(handler.formatter).__name__ == "JsonFormatter"
    finally:
        logger.handlers.clear()
        os.remove(path)


def test_an_operators_vllm_logging_config_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/mine.json")
    logs.route_vllm_logs("info", "json")
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == "/etc/mine.json"
