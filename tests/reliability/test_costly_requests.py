"""Each costly request (reliability/costly_requests.py) against a gateway process (fake engine, real
sockets): /health keeps answering while it runs, and the process does not grow by much more
than the body. The bound on /health is 250 ms, not the 100 ms target: these tests share 2 CPU
cores with the test client and other work (the battery's `costs` section reports the figures
against the real engine)."""

from __future__ import annotations

import pytest

from harness.gateway import start_gateway
from reliability.costly_requests import costly_requests, measure

HEALTH_BOUND_MS = 250


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    import httpx

    gateway = start_gateway(tmp_path_factory.mktemp("costs"), fake_models={"m": {}})
    # Once per process, the first token-id request loads cl100k_base (about 50 MB): not a cost
    # of any one request.
    httpx.post(gateway.base_url + "/v1/embeddings", json={"model": "m", "input": [[1, 2]]})
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("name", list(costly_requests("m")))
def test_a_costly_request_neither_holds_health_nor_grows_the_process(gateway, name) -> None:
    path, body = costly_requests("m")[name]
    cost = measure(gateway.base_url, gateway.process.pid, name, path, body)
    expected = 200 if "truncate" in name else 400
    assert cost.status == expected, cost
    assert cost.health_max_ms < HEALTH_BOUND_MS, cost
    assert cost.rss_growth_mb < 2 * cost.body_mb + 32, cost
    assert cost.answer_s < 5, cost
