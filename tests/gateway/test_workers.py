"""`--workers`: parsing, the automatic default, and N processes serving one port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.config import ConfigError, load_settings, resolve_model_path
from reliability.server import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, expected", [("1", 1), ("3", 3), (" 4 ", 4)])
def test_workers_flag_takes_a_count(raw: str, expected: int) -> None:
    assert load_settings({"workers": raw}, environ={}).workers == expected


def test_workers_env_twin() -> None:
    assert load_settings({}, environ={"GATEWAY_WORKERS": "2"}).workers == 2


@pytest.mark.parametrize("raw", ["0", "-1", "many"])
def test_workers_must_be_auto_or_positive(raw: str) -> None:
    with pytest.raises(ConfigError, match="--workers"):
        load_settings({"workers": raw}, environ={})


def test_workers_auto_is_one_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hardware.has_nvidia_gpu", lambda: False)
    assert load_settings({"workers": "auto"}, environ={}).workers == 1
    assert load_settings({}, environ={}).workers == 1


def test_cache_size_option() -> None:
    assert load_settings({}, environ={}).embedding_cache_size == 0
    assert (
        load_settings({}, environ={"GATEWAY_EMBEDDING_CACHE_SIZE": "1000"}).embedding_cache_size
        == 1000
    )
    with pytest.raises(ConfigError, match="--embedding-cache-size"):
        load_settings({"embedding_cache_size": "-1"}, environ={})


def _start_two_workers(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """A fake-engine gateway with two workers, started as a user starts it, once ready."""
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--engine",
                "fake",
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            # An operator's metrics folder (emptied at start, kept): a supervisor killed with
            # SIGKILL cannot remove a temporary one.
            cwd=REPO,
            env={
                **os.environ,
                "HF_HUB_OFFLINE": "1",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", process, log, timeout_s=60, poll_s=0.2)
        _wait_every_worker_ready(url)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def _wait_every_worker_ready(url: str, timeout_s: float = 30.0) -> None:
    """One worker answering /ready 200 says nothing of the other, which may still be starting
    its engine: wait for 10 ready answers in a row on fresh connections (the kernel spreads
    them over both workers)."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while streak < 10:
        assert time.monotonic() < deadline, "not every worker became ready"
        with httpx.Client() as client:
            streak = streak + 1 if client.get(url + "/ready").status_code == 200 else 0


def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    process, url = _start_two_workers(tmp_path)
    try:
        workers = [
            p
            for p in psutil.Process(process.pid).children()
            if "spawn_main" in " ".join(p.cmdline())
        ]  # not the resource tracker
        assert len(workers) == 2
        # Every worker answers on the one port: fresh connections reach both.
        for _ in range(20):
            with httpx.Client() as client:
                r = client.post(
                    url + "/v1/embeddings",
                    json={"model": "all-MiniLM-L6-v2", "input": ["hi", "hi"]},
                )
            assert r.status_code == 200
            assert len(r.json()["data"]) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _workers(process: subprocess.Popen) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(process.pid).children() if "spawn_main" in " ".join(p.cmdline())
    ]  # not the resource tracker


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(tmp_path: Path) -> None:
    process, url = _start_two_workers(tmp_path, "--engine-restart-backoff-s", "0.2")
    try:
        victim, survivor = _workers(process)
        victim.kill()
        victim.wait(10)
        started = time.monotonic()
        statuses = set()
        while time.monotonic() - started < 60:
            with httpx.Client() as client:  # fresh connections: the kernel picks a worker
                statuses.add(
                    client.post(
                        url + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hi"}
                    ).status_code
                )
            workers = _workers(process)
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.1)
        assert len(_workers(process)) == 2 and survivor in _workers(process)
        assert statuses == {200}  # no request was lost to the dead worker
        wait_ready(url + "/ready", process, tmp_path / "server.log", timeout_s=60)
        assert (
            "gateway-worker-0 exited with -9" in (tmp_path / "server.log").read_text()
            or "gateway-worker-1 exited with -9" in (tmp_path / "server.log").read_text()
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    process, _ = _start_two_workers(tmp_path)
    workers: list[psutil.Process] = []
    try:
        workers = psutil.Process(process.pid).children()
        process.kill()
        process.wait()
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()


def test_builtin_model_folder_is_local() -> None:
    # default_workers measures weight files; the built-in model must be a folder with them.
    assert list(Path(resolve_model_path("builtin:all-MiniLM-L6-v2")).glob("*.safetensors"))


def test_two_workers_report_one_set_of_metrics_and_json_logs(tmp_path: Path) -> None:
    """Every scrape, whichever worker answers it, shows both workers' requests; the log (a
    file, so JSON by default) carries each request's id."""
    from prometheus_client.parser import text_string_to_metric_families

    from reliability.server import start_gateway

    gateway = start_gateway(
        tmp_path, fake_models={"m": {}}, args=["--workers", "2", "--max-inflight-inputs", "100"]
    )
    ready = ("embedding_gateway_engine_state", (("model", "m"), ("state", "ready")))

    def scrape() -> dict:
        with httpx.Client() as client:  # a fresh connection: either worker may answer
            text = client.get(gateway.base_url + "/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        # /ready said yes from one worker; the other may still be starting.
        deadline = time.monotonic() + 30
        while scrape().get(ready) != 2:
            assert time.monotonic() < deadline, "the second worker never became ready"
            time.sleep(0.2)
        for i in range(20):
            with httpx.Client() as client:
                r = client.post(
                    gateway.base_url + "/v1/embeddings",
                    json={"model": "m", "input": ["a b", "c"]},
                    headers={"x-request-id": f"req-{i}"},
                )
                assert r.status_code == 200
        assert httpx.get(gateway.base_url + "/no/such/path").status_code == 404
        for _ in range(6):
            numbers = scrape()
            assert (
                numbers[
                    (
                        "embedding_gateway_requests_total",
                        (("model", "m"), ("route", "/v1/embeddings"), ("status", "200")),
                    )
                ]
                == 20
            )
            assert (
                numbers[
                    (
                        "embedding_gateway_requests_total",
                        (("model", ""), ("route", "unmatched"), ("status", "404")),
                    )
                ]
                == 1
            )
            assert numbers[("embedding_gateway_inputs_total", (("model", "m"),))] == 40
            assert numbers[ready] == 2
            assert numbers[("embedding_gateway_admission_limit_inputs", (("model", "m"),))] == 200
            assert numbers[("embedding_gateway_inflight_inputs", (("model", "m"),))] == 0
    finally:
        assert gateway.stop() == 0
    lines = [json.loads(line) for line in gateway.log().splitlines()]
    ids = {
        line["request_id"]
        for line in lines
        if line["logger"] == "gateway.access" and line["path"] == "/v1/embeddings"
    }
    assert ids == {f"req-{i}" for i in range(20)}
    assert any(line["message"].startswith("model m: loading weights") for line in lines)
