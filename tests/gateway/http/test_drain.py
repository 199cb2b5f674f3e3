"""The drain gate: refuses new requests with 503 while draining, keeps the probes answering,
and counts what is in flight (process-level SIGTERM tests: tests/reliability)."""

from __future__ import annotations

from tests.conftest import serving


def test_new_requests_are_refused_with_503_and_close_while_draining() -> None:
    with serving() as client:
        drain = client.app_state["drain"]
        drain.begin()
        response = client.post("/v1/embeddings", json={"model": "fake", "input": "x"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.headers["connection"] == "close"
        assert response.json()["error"]["code"] == "draining"
        assert response.headers["x-request-id"]  # still inside the request context
        assert drain.inflight == 0


def test_probes_answer_while_draining_and_ready_says_so() -> None:
    with serving() as client:
        client.app_state["drain"].begin()
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"


def test_rerank_refusal_carries_detail() -> None:
    with serving() as client:
        client.app_state["drain"].begin()
        response = client.post("/v1/rerank", json={})
        assert response.status_code == 503
        assert response.json()["detail"] == response.json()["error"]["message"]
