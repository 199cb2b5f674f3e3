"""The Files and Batches routes in process (fake engine): limits, authentication, paths that
never reach the file system, priority below interactive requests, expiry and cleanup."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.config import Settings
from tests.conftest import serving

KEY = "batch-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = {"model": "fake", "input": "an interactive query"}


def jsonl(*bodies: dict) -> bytes:
    return b"".join(
        json.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
        ).encode()
        + b"\n"
        for i, body in enumerate(bodies)
    )


def upload(client: TestClient, content: bytes, **fields: str):
    return client.post(
        "/v1/files",
        files={"file": ("in.jsonl", content)},
        data={"purpose": "batch", **fields},
        headers=AUTH,
    )


def create(client: TestClient, file_id: str, **fields):
    return client.post(
        "/v1/batches",
        headers=AUTH,
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
            **fields,
        },
    )


def wait_status(client: TestClient, batch_id: str, statuses, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.get(f"/v1/batches/{batch_id}", headers=AUTH).json()
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)


def settings(tmp_path: Path, **options) -> Settings:
    return Settings(api_keys=(KEY,), batch_dir=str(tmp_path / "data"), **options)


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/{file}"),
        ("DELETE", "/v1/files/{file}"),
        ("GET", "/v1/files/{file}/content"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches"),
        ("GET", "/v1/batches/{batch}"),
        ("POST", "/v1/batches/{batch}/cancel"),
    ],
)
def test_every_batch_route_needs_the_key(tmp_path: Path, method: str, path: str) -> None:
    with serving(settings(tmp_path), fake=FakeEngine(latency_s=1)) as client:
        content = jsonl(*[{"model": "fake", "input": "a"}] * 5)
        file_id = upload(client, content).json()["id"]
        batch_id = create(client, file_id).json()["id"]  # runs for seconds: cancellable
        spare = upload(client, content).json()["id"]  # one no running batch reads
        path = path.format(file=spare if method == "DELETE" else file_id, batch=batch_id)
        valid = {
            "/v1/files": {"files": {"file": ("in.jsonl", content)}, "data": {"purpose": "batch"}},
            "/v1/batches": {
                "json": {
                    "input_file_id": file_id,
                    "completion_window": "24h",
                    "endpoint": "/v1/embeddings",
                }
            },
        }
        request = valid.get(path, {}) if method == "POST" else {}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = client.request(method, path, headers=headers, **request)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.request(method, path, headers=AUTH, **request).status_code == 200, path


# -- limits ---------------------------------------------------------------------------------


def test_an_upload_over_the_file_limit_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    with serving(settings(tmp_path, batch_max_file_bytes=1000)) as client:
        refused = upload(client, b"x" * 1001)
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "payload_too_large"
        # Past the limit plus the multipart envelope, refused from Content-Length unread.
        huge = client.post(
            "/v1/files",
            headers={
                **AUTH,
                "content-type": "multipart/form-data; boundary=x",
                "content-length": str(10**9),
            },
            content=b"",
        )
        assert huge.status_code == 413
        assert upload(client, b"x" * 1000).status_code == 200
        assert _stored(tmp_path) == 1


def test_uploads_may_exceed_the_body_limit_but_other_routes_may_not(tmp_path: Path) -> None:
    with serving(settings(tmp_path, max_body_bytes=2000)) as client:
        assert (
            upload(client, jsonl(*[{"model": "fake", "input": "a" * 100}] * 30)).status_code == 200
        )
        big = client.post("/v1/batches", headers=AUTH, json={"metadata": {"a": "b" * 3000}})
        assert big.status_code == 413


def test_too_many_lines_is_refused_at_upload(tmp_path: Path) -> None:
    with serving(settings(tmp_path, batch_max_lines=3)) as client:
        refused = upload(client, jsonl(*[{"model": "fake", "input": "a"}] * 4))
        assert refused.status_code == 400
        assert "at most 3" in refused.json()["error"]["message"]
        assert upload(client, jsonl(*[{"model": "fake", "input": "a"}] * 3)).status_code == 200


def test_an_upload_that_would_fill_the_disk_is_507(tmp_path: Path) -> None:
    with serving(settings(tmp_path, batch_min_free_bytes=1 << 62)) as client:
        refused = upload(client, jsonl({"model": "fake", "input": "a"}))
        assert refused.status_code == 507
        assert refused.json()["error"]["code"] == "insufficient_storage"
        assert _stored(tmp_path) == 0


@pytest.mark.parametrize(
    "fields,status,param",
    [
        ({"purpose": "fine-tune"}, 400, "purpose"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
            400,
            "expires_after",
        ),
    ],
)
def test_bad_upload_fields_are_400(tmp_path: Path, fields, status, param) -> None:
    with serving(settings(tmp_path)) as client:
        refused = upload(client, b"{}\n", **fields)
        assert (refused.status_code, refused.json()["error"]["param"]) == (status, param)


def test_uploads_must_be_multipart(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        assert client.post("/v1/files", headers=AUTH, json={"purpose": "batch"}).status_code == 415


@pytest.mark.parametrize(
    "change,param",
    [
        ({"endpoint": "/v1/chat/completions"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"completion_window": ["24h"]}, "completion_window"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 3600.0}},
            "output_expires_after",
        ),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 10}}, "output_expires_after"),
    ],
)
def test_bad_batch_fields_are_400(tmp_path: Path, change, param) -> None:
    with serving(settings(tmp_path)) as client:
        file_id = upload(client, jsonl({"model": "fake", "input": "a"})).json()["id"]
        refused = create(client, file_id, **change)
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, param)


@pytest.mark.parametrize(
    "body,param,message",
    [
        ([], None, "the request body must be a JSON object"),
        (
            {"endpoint": None},
            "endpoint",
            "`endpoint` must be one of ['/v1/embeddings', '/v1/rerank'], got None",
        ),
        (
            {"completion_window": "48h"},
            "completion_window",
            "`completion_window` must be one of ['24h'], got '48h'",
        ),
        (
            {"input_file_id": 7},
            "input_file_id",
            "`input_file_id` is required: the id of an uploaded file",
        ),
        (
            {"metadata": {"k" * 65: "v"}},
            "metadata",
            (
                "`metadata` must be an object of at most 16 string values (keys up to 64 "
                "characters, values up to 512)"
            ),
        ),
        (
            {"output_expires_after": {"anchor": "updated_at", "seconds": 3600}},
            "output_expires_after",
            '`output_expires_after` must be {"anchor": "created_at", "seconds": N}',
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": "3600"}},
            "output_expires_after",
            "`output_expires_after.seconds` must be an integer",
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 2592001}},
            "output_expires_after",
            "`output_expires_after.seconds` must be between 3600 and 2592000, got 2592001",
        ),
    ],
)
def test_batch_refusals_say_what_is_wrong(tmp_path: Path, body, param, message) -> None:
    with serving(settings(tmp_path)) as client:
        file_id = upload(client, jsonl({"model": "fake", "input": "a"})).json()["id"]
        valid = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
        # An explicit null is an absent field.
        sent = {**valid, **body} if isinstance(body, dict) else body
        refused = client.post("/v1/batches", headers=AUTH, json=sent)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == param
        assert refused.json()["error"]["message"] == message


def test_a_batch_of_an_unknown_file_is_404(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        refused = create(client, "file-" + "0" * 32)
        assert (refused.status_code, refused.json()["error"]["param"]) == (404, "input_file_id")


# -- no client value reaches the file system ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/..%2F..%2Fbatches.sqlite3/content",
        "/v1/files/../batches.sqlite3",
        "/v1/files/%2e%2e/content",
        "/v1/files/file-..%2F..%2Fbatches.sqlite3/content",
        "/v1/files/batches.sqlite3/content",
        "/v1/files/%2Fetc%2Fpasswd/content",
        "/v1/files/file-0123456789abcdef0123456789abcdef/content",
        "/v1/files/..",
        "/v1/batches/..%2Fpartial",
        "/v1/batches/batch_..%2F..",
    ],
)
def test_traversal_attempts_find_nothing(tmp_path: Path, path: str) -> None:
    with serving(settings(tmp_path)) as client:
        upload(client, jsonl({"model": "fake", "input": "a"}))
        for method in ("GET", "DELETE"):
            answer = client.request(method, path, headers=AUTH)
            assert answer.status_code in (404, 405), (method, path)
            assert b"SQLite" not in answer.content and b"root:" not in answer.content
        assert _stored(tmp_path) == 1


def test_the_uploaded_filename_is_only_a_label(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        answer = client.post(
            "/v1/files",
            headers=AUTH,
            data={"purpose": "batch"},
            files={"file": ("../../escaped.jsonl", b"{}\n")},
        )
        assert answer.status_code == 200
        assert answer.json()["filename"] == "../../escaped.jsonl"
    assert not list(tmp_path.rglob("escaped*"))
    assert [p.name for p in (tmp_path / "data" / "files").iterdir()] == [answer.json()["id"]]


def _stored(tmp_path: Path) -> int:
    folder = tmp_path / "data" / "files"
    return len(list(folder.iterdir())) if folder.exists() else 0


# -- priority, expiry, cleanup --------------------------------------------------------------


def test_batch_lines_wait_while_interactive_work_is_in_flight(tmp_path: Path) -> None:
    engine = FakeEngine()
    with serving(settings(tmp_path), fake=engine) as client:
        admission = client.app_state["admission"]
        with admission.admit("fake", 1):  # an interactive request holding the engine
            file_id = upload(
                client, jsonl(*[{"model": "fake", "input": f"t{i}"} for i in range(5)])
            ).json()["id"]
            batch_id = create(client, file_id).json()["id"]
            wait_status(client, batch_id, ("in_progress",))
            time.sleep(0.3)
            assert (
                client.get(f"/v1/batches/{batch_id}", headers=AUTH).json()["request_counts"][
                    "completed"
                ]
                == 0
            )
            assert engine.background_peak == 0  # lines may start; their inputs wait
        done = wait_status(client, batch_id, ("completed",))
        assert done["request_counts"]["completed"] == 5
        assert admission.inflight == 0  # batch work never counted against interactive


def test_under_interactive_traffic_batch_inputs_enter_the_engine_a_few_tokens_at_a_time(
    tmp_path: Path,
) -> None:
    # Each input "t<i>" is 3 fake tokens: a budget of 6 holds two at a time.
    engine = FakeEngine(latency_s=0.01)
    options = {
        "batch_max_inflight_tokens": 6,
        "batch_quiet_inflight_tokens": 1000,
        "batch_quiet_after_s": 0.5,
        "batch_quiet_latency_ms": 1000,  # the fake answers in 10 ms: the budget may grow
    }
    lines = [{"model": "fake", "input": [f"t{i}" for i in range(4)]}] * 10
    with serving(settings(tmp_path, **options), fake=engine) as client:
        stop = threading.Event()

        def interactive() -> None:
            while not stop.is_set():
                assert client.post("/v1/embeddings", json=QUERY, headers=AUTH).status_code == 200

        traffic = threading.Thread(target=interactive)
        traffic.start()
        try:
            time.sleep(0.1)
            busy = create(client, upload(client, jsonl(*lines)).json()["id"]).json()["id"]
            assert wait_status(client, busy, ("completed",))["request_counts"]["completed"] == 10
        finally:
            stop.set()
            traffic.join()
        assert engine.background_peak == 2

        time.sleep(0.6)  # no interactive request for half a second: the quiet budget
        engine.background_peak = 0
        quiet = create(client, upload(client, jsonl(*lines)).json()["id"]).json()["id"]
        wait_status(client, quiet, ("completed",))
        assert engine.background_peak >= 8


def test_a_quiet_budget_stays_small_when_the_engine_answers_slower_than_the_target(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(latency_s=0.05)  # 50 ms an input, against a 10 ms target
    options = {
        "batch_max_inflight_tokens": 6,
        "batch_quiet_inflight_tokens": 1000,
        "batch_quiet_after_s": 0.01,
        "batch_quiet_latency_ms": 10,
    }
    lines = [{"model": "fake", "input": [f"t{i}" for i in range(4)]}] * 5
    with serving(settings(tmp_path, **options), fake=engine) as client:
        batch_id = create(client, upload(client, jsonl(*lines)).json()["id"]).json()["id"]
        assert wait_status(client, batch_id, ("completed",))["request_counts"]["completed"] == 5
    assert engine.background_peak == 2  # the busy budget's two 3-token inputs


def test_a_batch_line_has_no_request_timeout(tmp_path: Path) -> None:
    # Paced one input at a time, the line takes 0.5 s: past the interactive timeout.
    options = {
        "request_timeout_s": 0.2,
        "batch_max_inflight_tokens": 3,
        "batch_quiet_inflight_tokens": 3,
    }
    with serving(settings(tmp_path, **options), fake=FakeEngine(latency_s=0.1)) as client:
        line = {"model": "fake", "input": [f"t{i}" for i in range(5)]}
        batch_id = create(client, upload(client, jsonl(line)).json()["id"]).json()["id"]
        done = wait_status(client, batch_id, ("completed",))
        assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}


def test_a_batch_past_its_window_expires_with_the_rest_in_the_error_file(tmp_path: Path) -> None:
    with serving(settings(tmp_path), fake=FakeEngine(latency_s=0.1)) as client:
        file_id = upload(
            client, jsonl(*[{"model": "fake", "input": f"t{i}"} for i in range(100)])
        ).json()["id"]
        batch_id = create(client, file_id).json()["id"]
        wait_status(client, batch_id, ("in_progress",))
        with sqlite3.connect(tmp_path / "data" / "batches.sqlite3") as db:
            db.execute("UPDATE batches SET expires_at = 0 WHERE id = ?", (batch_id,))
        done = wait_status(client, batch_id, ("expired",))
        assert done["expired_at"] is not None
        counts = done["request_counts"]
        assert counts["total"] == 100 and counts["completed"] + counts["failed"] == 100
        errors = client.get(f"/v1/files/{done['error_file_id']}/content", headers=AUTH)
        codes = {json.loads(x)["error"]["code"] for x in errors.text.splitlines()}
        assert codes == {"batch_expired"} and counts["failed"] > 0


def test_expired_files_are_deleted_by_the_cleanup(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        short = upload(
            client,
            b"{}\n",
            **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
        ).json()
        kept = upload(client, b"{}\n").json()
        assert short["expires_at"] == short["created_at"] + 3600
        assert kept["expires_at"] == kept["created_at"] + 30 * 24 * 3600
        service = client.app_state["batches"]
        assert service.cleanup(at=short["created_at"] + 3601) == [short["id"]]
        assert client.get(f"/v1/files/{short['id']}", headers=AUTH).status_code == 404
        assert client.get(f"/v1/files/{kept['id']}", headers=AUTH).status_code == 200
        assert _stored(tmp_path) == 1


def test_a_file_a_running_batch_reads_cannot_be_deleted(tmp_path: Path) -> None:
    with serving(settings(tmp_path), fake=FakeEngine(latency_s=0.2)) as client:
        file_id = upload(
            client, jsonl(*[{"model": "fake", "input": f"t{i}"} for i in range(20)])
        ).json()["id"]
        batch_id = create(client, file_id).json()["id"]
        refused = client.delete(f"/v1/files/{file_id}", headers=AUTH)
        assert refused.status_code == 400 and batch_id in refused.json()["error"]["message"]
        client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH)
        wait_status(client, batch_id, ("cancelled",))
        assert client.delete(f"/v1/files/{file_id}", headers=AUTH).json()["deleted"] is True


def test_lists_page_with_after(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        ids = [upload(client, b"{}\n").json()["id"] for _ in range(3)]
        first = client.get("/v1/files?limit=2", headers=AUTH).json()
        assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
        rest = client.get(f"/v1/files?limit=2&after={first['last_id']}", headers=AUTH).json()
        assert [f["id"] for f in rest["data"]] == ids[:1] and not rest["has_more"]
        assert client.get("/v1/files?limit=0", headers=AUTH).status_code == 400


# -- metrics --------------------------------------------------------------------------------


def test_batch_work_counts_in_the_metrics_as_requests_do(tmp_path: Path) -> None:
    # Each "t<i> x" is 4 fake tokens; a refused line (unknown model) processes nothing.
    lines = [{"model": "fake", "input": [f"t{i} x", f"t{i} y"]} for i in range(3)]
    lines.append({"model": "missing", "input": "nothing"})
    with serving(settings(tmp_path), fake=FakeEngine()) as client:
        batch_id = create(client, upload(client, jsonl(*lines)).json()["id"]).json()["id"]
        assert wait_status(client, batch_id, ("completed",))["request_counts"]["failed"] == 1
        scrape = client.get("/metrics", headers=AUTH).text
    counted = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("embedding_gateway_") and 'model="fake"' in line
    }
    assert counted["embedding_gateway_inputs_total"] == 6
    assert counted["embedding_gateway_tokens_total"] == 6 * 4
