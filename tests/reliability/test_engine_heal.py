"""The real vLLM engine heals: its EngineCore process killed (SIGKILL) or stopped (SIGSTOP)
is noticed, its requests answer 503 rather than waiting, and the engine is restarted in the
same gateway process. One gateway (one engine start, then the restarts under test)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from harness.gateway import Gateway, start_gateway

pytestmark = pytest.mark.engine
BODY = {"model": "minilm", "input": ["heal me"]}
RESTART_S = 600  # an engine start on a shared 2-core machine, with room


def engine_cores(gateway: Gateway) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(gateway.process.pid).children(recursive=True)
        if "EngineCor" in p.name()
    ]


def wait_for(predicate, timeout_s: float, poll_s: float = 0.1) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "timed out"
        time.sleep(poll_s)
    return time.monotonic() - started


def ready(gateway: Gateway) -> httpx.Response:
    return httpx.get(gateway.base_url + "/ready", timeout=5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    server = start_gateway(
        tmp_path_factory.mktemp("heal"),
        ready_timeout=RESTART_S,
        models=[{"name": "minilm", "path": "builtin:all-MiniLM-L6-v2", "max_model_len": 128}],
        args=[
            "--health-check-interval-s",
            "1",
            "--health-check-timeout-s",
            "5",
            "--engine-restart-backoff-s",
            "1",
        ],
    )
    yield server
    for core in engine_cores(server):
        core.send_signal(signal.SIGCONT)
    server.stop(timeout=60)


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_gateway_and_engine_run_with_the_tuned_cpu_environment(gateway: Gateway) -> None:
    """engine_environment's preloads reach every process: the gateway re-executed itself
    with them, and the engine core and the model's worker process inherited them."""
    family = psutil.Process(gateway.process.pid).children(recursive=True)
    engine = [p for p in family if "VLLM" in p.name()]
    assert len(engine) >= 2  # the engine core and its model worker
    for pid in [gateway.process.pid, *(p.pid for p in engine)]:
        maps = mapped_libraries(pid)
        assert "libtcmalloc_minimal" in maps and "libiomp5" in maps, pid


def test_killed_engine_core_is_restarted_in_process(gateway: Gateway) -> None:
    [core] = engine_cores(gateway)
    core.kill()
    flip = wait_for(lambda: ready(gateway).status_code == 503, 10, 0.05)
    assert flip < 2
    refused = httpx.post(gateway.base_url + "/v1/embeddings", json=BODY, timeout=10)
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert ready(gateway).json()["models"] == {"minilm": "restarting"}
    assert httpx.get(gateway.base_url + "/health").status_code == 200  # recovering, alive
    wait_for(lambda: ready(gateway).status_code == 200, RESTART_S, 1)
    assert httpx.post(gateway.base_url + "/v1/embeddings", json=BODY).status_code == 200
    assert [p.pid for p in engine_cores(gateway)] != [core.pid]


def test_stopped_engine_core_is_detected_killed_and_restarted(gateway: Gateway) -> None:
    [core] = engine_cores(gateway)
    with ThreadPoolExecutor(1) as pool:
        core.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        in_flight = pool.submit(
            httpx.post, gateway.base_url + "/v1/embeddings", json=BODY, timeout=60
        )
        detected = wait_for(
            lambda: ready(gateway).json()["models"]["minilm"] == "restarting", 30, 0.1
        )
        answer = in_flight.result()
    assert detected < 15
    assert answer.status_code == 503  # at detection, not a 504 after the request timeout
    assert time.monotonic() - stopped_at < 20
    # The stopped process is killed (SIGKILL ends a stopped process), not left behind.
    wait_for(lambda: not core.is_running() or core.status() == psutil.STATUS_ZOMBIE, 30)
    wait_for(lambda: ready(gateway).status_code == 200, RESTART_S, 1)
    assert httpx.post(gateway.base_url + "/v1/embeddings", json=BODY).status_code == 200
    assert "back in service (restart 2)" in gateway.log()
