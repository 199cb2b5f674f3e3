"""The gateway as a process (fake engine): SIGTERM drain, raw-HTTP path tricks against
uvicorn's own parsing, and log hygiene. Seconds each."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness.gateway import start_gateway
from harness.raw_http import raw_status

KEY = "sk-secret-key-4f1e"
SENTINEL = "SENTINEL-never-logged-7d2c"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory):
    gateway = start_gateway(
        tmp_path_factory.mktemp("locked"),
        fake_models={"fake": {}},
        args=["--api-key", KEY, "--api-key", "second-key"],
    )
    yield gateway
    gateway.stop()


@pytest.mark.parametrize(
    "target",
    [
        "/v1/embeddings",
        "//v1/embeddings",
        "/v1/embeddings/",
        "/v1%2Fembeddings",
        "/v1%2fembeddings",
        "/health/../v1/embeddings",
        "/health/%2E%2E/v1/embeddings",
        "/ready/..%2Fv1/embeddings",
        "/./v1/embeddings",
        "/health%2F..%2Fv1/embeddings",
        "/v1/embeddings?/health",
        "/v1/embeddings#/health",
        "/v1/embeddings;/health",
        "http://127.0.0.1/v1/embeddings",
        "/%761/embeddings",
        "/v1/embeddings%00",
    ],
)
def test_raw_path_tricks_never_bypass_auth(locked, target) -> None:
    assert raw_status(locked.port, f"POST {target} HTTP/1.1") in (400, 401, 404)
    assert raw_status(locked.port, f"POST {target} HTTP/1.1") != 200


@pytest.mark.parametrize("host", ["x/v1?", "a?b", "127.0.0.1/health?", "evil#", "h/health/.."])
def test_host_header_tricks_never_bypass_auth(locked, host) -> None:
    assert raw_status(locked.port, "POST /v1/embeddings HTTP/1.1", host=host) in (400, 401)


def test_both_keys_work_over_the_wire(locked) -> None:
    for key in (KEY, "second-key"):
        response = httpx.post(
            locked.base_url + "/v1/embeddings",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "fake", "input": "a"},
        )
        assert response.status_code == 200


def test_logs_carry_request_id_and_counts_but_no_bodies_or_keys(locked) -> None:
    response = httpx.post(
        locked.base_url + "/v1/embeddings",
        headers=AUTH,
        json={"model": "fake", "input": [SENTINEL, "b c"]},
    )
    assert response.status_code == 200
    refused = httpx.post(
        locked.base_url + "/v1/embeddings",
        headers={"Authorization": f"Bearer {SENTINEL}"},
        json={"model": "fake", "input": SENTINEL},
    )
    assert refused.status_code == 401
    request_id = response.headers["x-request-id"]
    time.sleep(0.2)
    log = locked.log()
    line = next(line for line in log.splitlines() if request_id in line)
    for field in (
        "path='/v1/embeddings'",
        "status=200",
        "model=fake",
        "inputs=2",
        "tokens=",
        "ms=",
    ):
        assert field in line, line
    assert SENTINEL not in log
    assert KEY not in log and "second-key" not in log


def test_client_request_id_is_kept_when_sane(locked) -> None:
    response = httpx.get(locked.base_url + "/health", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    for odd in ("a b", "x" * 65, "id/../x"):
        answer = httpx.get(locked.base_url + "/health", headers={"x-request-id": odd})
        assert answer.headers["x-request-id"] not in (odd, "")


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fake_models={"fake": {"latency_s": 1.0}})
    url = gateway.base_url
    with ThreadPoolExecutor(8) as pool:
        in_flight = [
            pool.submit(
                httpx.post, url + "/v1/embeddings", timeout=10, json={"model": "fake", "input": "a"}
            )
            for _ in range(6)
        ]
        time.sleep(0.4)
        gateway.process.terminate()
        time.sleep(0.2)
        ready = httpx.get(url + "/ready")
        refused = httpx.post(url + "/v1/embeddings", json={"model": "fake", "input": "a"})
        statuses = [f.result().status_code for f in in_flight]
    assert statuses == [200] * 6
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "draining"
    assert gateway.process.wait(10) == 0


def test_drain_gives_up_after_the_grace_period(tmp_path: Path) -> None:
    gateway = start_gateway(
        tmp_path, fake_models={"fake": {"latency_s": 30}}, args=["--drain-grace-s", "0.5"]
    )
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(
            httpx.post,
            gateway.base_url + "/v1/embeddings",
            timeout=10,
            json={"model": "fake", "input": "a"},
        )
        time.sleep(0.3)
        started = time.monotonic()
        gateway.process.terminate()
        assert gateway.process.wait(10) == 0
        assert time.monotonic() - started < 4
        cut = stuck.result()
    assert cut.status_code == 503  # answered in the envelope, not dropped
    assert cut.json()["error"]["code"] == "draining"
