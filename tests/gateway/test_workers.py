"""`--workers`: parsing, the automatic default, and N processes serving one port."""

from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.config import ConfigError, load_settings, resolve_model_path
from harness.gateway import start_workers, wait_every_worker_ready, worker_processes
from harness.launch import wait_ready


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


def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    gateway = start_workers(tmp_path, args=["--log-level", "warning"])
    try:
        workers = worker_processes(gateway)
        assert len(workers) == 2
        # Every worker answers on the one port: fresh connections reach both.
        for _ in range(20):
            with httpx.Client() as client:
                r = client.post(
                    gateway.base_url + "/v1/embeddings", json={"model": "m", "input": ["hi", "hi"]}
                )
            assert r.status_code == 200
            assert len(r.json()["data"]) == 2
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        gateway.stop()


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(tmp_path: Path) -> None:
    gateway = start_workers(
        tmp_path, args=["--log-level", "warning", "--engine-restart-backoff-s", "0.2"]
    )
    try:
        victim, survivor = worker_processes(gateway)
        victim.kill()
        victim.wait(10)
        started = time.monotonic()
        statuses = set()
        while time.monotonic() - started < 60:
            with httpx.Client() as client:  # fresh connections: the kernel picks a worker
                statuses.add(
                    client.post(
                        gateway.base_url + "/v1/embeddings", json={"model": "m", "input": "hi"}
                    ).status_code
                )
            workers = worker_processes(gateway)
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.1)
        assert len(worker_processes(gateway)) == 2 and survivor in worker_processes(gateway)
        assert statuses == {200}  # no request was lost to the dead worker
        wait_ready(gateway.base_url + "/ready", gateway.process, gateway.log_path, timeout_s=60)
        assert (
            "gateway-worker-0 exited with -9" in gateway.log()
            or "gateway-worker-1 exited with -9" in gateway.log()
        )
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()


def _listeners(port: int) -> int:
    return sum(
        1
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    )


def test_a_replacement_worker_takes_connections_only_once_its_engine_is_ready(
    tmp_path: Path,
) -> None:
    # The model takes 5 s to load. Listening meanwhile, the replacement would take its share
    # of new connections and answer them 503 ("still loading"), or hold them until loaded,
    # while the other worker could serve them at once.
    load_s = 5.0
    gateway = start_workers(
        tmp_path,
        fake_models={"m": {"start_delay_s": load_s}},
        args=["--log-level", "warning", "--engine-restart-backoff-s", "0.2"],
        ready_timeout=60,
    )
    try:
        assert _listeners(gateway.port) == 2
        victim, _ = worker_processes(gateway)
        victim.kill()
        victim.wait(10)
        killed_at = time.monotonic()
        statuses: dict[int | str, int] = {}
        while _listeners(gateway.port) < 2:
            assert time.monotonic() - killed_at < 60
            try:
                with httpx.Client(timeout=load_s / 2) as client:  # fresh: the kernel picks
                    status: int | str = client.post(
                        gateway.base_url + "/v1/embeddings", json={"model": "m", "input": "hi"}
                    ).status_code
            except httpx.TimeoutException:
                status = "held"
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.02)
        assert time.monotonic() - killed_at >= load_s  # listening only once it had loaded
        assert set(statuses) == {200}, statuses
        wait_every_worker_ready(gateway.base_url)
    finally:
        gateway.stop()


def _ready_then_health(port: int) -> tuple[str, int] | None:
    """One worker's model state (/ready) and then its liveness answer (/health), asked on one
    connection so that both come from the same worker; None if it closed in between."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/ready")
        ready = connection.getresponse()
        state = json.loads(ready.read())["models"]["m"]
        if ready.will_close:
            return None
        connection.request("GET", "/health")
        health = connection.getresponse()
        health.read()
        return state, health.status
    except (OSError, http.client.HTTPException):
        return None  # the worker is exiting
    finally:
        connection.close()


def test_a_worker_whose_model_is_down_for_good_exits_and_the_pod_with_it(tmp_path: Path) -> None:
    """A model whose restarts are exhausted must not leave a live worker that cannot serve:
    the worker answers /health 503 until it exits, the supervisor starts a new one, and when
    the new ones cannot load the model either, the supervisor stops (exit 1) so that the
    orchestrator restarts the pod."""
    gateway = start_workers(
        tmp_path,
        args=[
            "--health-check-interval-s",
            "0.2",
            "--engine-restart-attempts",
            "2",
            "--engine-restart-backoff-s",
            "0.1",
        ],
    )
    try:
        first = worker_processes(gateway)
        gateway.control("m", dead=True, fail_start=True)
        answers = []
        deadline = time.monotonic() + 60
        while gateway.process.poll() is None and time.monotonic() < deadline:
            if (answer := _ready_then_health(gateway.port)) is not None:
                answers.append(answer)
        assert gateway.process.wait(timeout=30) == 1
    finally:
        gateway.stop()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in first)
    # A worker whose model is down is not live; one that is loading or restarting still is.
    assert ("down", 503) in answers
    assert ("down", 200) not in answers, answers
    log = gateway.log()
    assert log.count("exited with 1; starting a new one") >= 2  # each first worker replaced
    assert "times in a row; stopping the others" in log


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    gateway = start_workers(tmp_path, args=["--log-level", "warning"])
    workers: list[psutil.Process] = []
    try:
        workers = psutil.Process(gateway.process.pid).children()
        gateway.process.kill()
        gateway.process.wait()
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

    gateway = start_workers(tmp_path, args=["--max-inflight-inputs", "100"])
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
        # Both workers answer /ready; a worker's state gauge may lag a metrics sync behind.
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
