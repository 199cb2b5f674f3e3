"""Start-up progress: the step and elapsed time in the log and in /ready; a model that cannot
be found fails the start at once, naming its path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from adapters.vllm import check_model_source
from gateway.app import create_app
from gateway.serving.registry import ModelRegistry, ServedModel
from harness.gateway import start_gateway
from harness.launch import free_port
from harness.paths import REPO


def test_ready_shows_each_step_and_the_elapsed_time() -> None:
    # The fake spends 80% of its start delay loading weights, then 20% warming up.
    engine = FakeEngine(start_delay_s=1.0)
    app = create_app(
        ModelRegistry([ServedModel("slow", (), engine), ServedModel("quick", (), FakeEngine())])
    )
    with TestClient(app) as client:
        time.sleep(0.1)
        early = client.get("/ready").json()
        time.sleep(0.8)
        late = client.get("/ready").json()
        time.sleep(0.4)
        done = client.get("/ready")
    assert early["models"] == {"slow": "loading", "quick": "ready"}
    assert list(early["progress"]) == ["slow"]  # only models still starting
    assert early["progress"]["slow"]["step"] == "loading weights"
    assert 0.05 <= early["progress"]["slow"]["elapsed_s"] < 0.8
    assert late["progress"]["slow"]["step"] == "warming up"
    assert late["progress"]["slow"]["elapsed_s"] >= 0.8
    assert done.status_code == 200
    assert "progress" not in done.json()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_log_shows_model_step_and_elapsed_time(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(
        [ServedModel("slow", (), FakeEngine(start_delay_s=0.5))], progress_log_interval_s=0.1
    )
    with caplog.at_level(logging.INFO, logger="gateway.registry"):
        assert await registry.start_all()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "model slow: resolving (0.0 s since start)"
    assert messages[1] == "model slow: loading weights (0.0 s since start)"
    assert any(m.startswith("model slow: still loading weights (") for m in messages)
    assert any(m.startswith("model slow: warming up (0.4 s since start)") for m in messages)
    assert messages[-1].startswith("model slow: ready in 0.5")


def test_missing_local_model_paths_are_named() -> None:

    for path in ("/no/such/model", "./models/missing", "a/b/c"):
        with pytest.raises(FileNotFoundError, match=f"model path {path} does not exist"):
            check_model_source(path)


def test_uncached_hub_id_offline_is_named(monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        FileNotFoundError, match="model path no-org/no-model does not exist.*HF_HUB_OFFLINE"
    ):
        check_model_source("no-org/no-model")


def test_a_bad_model_path_fails_the_start_fast_naming_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--model",
            missing,
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--log-format",
            "text",
        ],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Before vLLM is imported: seconds, not the minute an engine start takes.
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert (
        f"model no-such-model failed to load while resolving: FileNotFoundError: model "
        f"path {missing} does not exist"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_server_freezes_its_start_up_heap_once_ready(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fake_models={"m": {}})
    try:
        deadline = time.monotonic() + 10
        while "start-up heap frozen" not in gateway.log():
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
    finally:
        gateway.stop()
