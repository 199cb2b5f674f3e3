"""The batch runner under store and disk faults and hostile input files (fake engine, faults
injected by wrapping the service's store): it retries instead of stopping, never loses a
line (`completed + failed == total`), caps a batch's output, pauses on low disk, reads
oversized lines without parsing them, reports its state in /ready and /metrics, and keeps
its data folder private."""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.batches import health, lines, runner
from gateway.batches.reading import ChunkBounds, Oversize, bounded_lines, cut_chunks
from gateway.batches.runner import BatchService
from gateway.batches.store import Store, batch_object, new_file_id
from tests.conftest import serving
from tests.gateway.batches.test_api import AUTH, create, jsonl, settings, upload, wait_status


class FaultyStore:
    """The service's real store; `fail(method, times)` makes the next `times` calls of that
    method (those `when` accepts) raise `error` instead."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._faults: dict[str, list[Any]] = {}

    def fail(
        self,
        method: str,
        times: int,
        error: Exception | None = None,
        when: Callable[..., bool] = lambda *args, **kwargs: True,
    ) -> None:
        self._faults[method] = [times, error or sqlite3.OperationalError("disk I/O error"), when]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._faults:
            return attr

        def faulty(*args: Any, **kwargs: Any) -> Any:
            fault = self._faults[name]
            if fault[0] > 0 and fault[2](*args, **kwargs):
                fault[0] -= 1
                raise fault[1]
            return attr(*args, **kwargs)

        return faulty


def service_of(client: TestClient) -> BatchService:
    return client.app.state.gateway["batches"]


def faulty(client: TestClient) -> FaultyStore:
    service = service_of(client)
    wrapped = FaultyStore(service.store)
    service._store = wrapped  # type: ignore[assignment]
    return wrapped


def run_batch(client: TestClient, *bodies: dict, statuses=("completed",), timeout_s=15) -> dict:
    file_id = upload(client, jsonl(*bodies)).json()["id"]
    batch_id = create(client, file_id).json()["id"]
    return wait_status(client, batch_id, statuses, timeout_s)


def content(client: TestClient, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.get(f"/v1/files/{file_id}/content", headers=AUTH).text
    return [json.loads(line) for line in text.splitlines()]


def counts(batch: dict) -> tuple[int, int, int]:
    c = batch["request_counts"]
    return c["total"], c["completed"], c["failed"]


LINES = [{"model": "fake", "input": f"text {i}"} for i in range(3)]


def test_a_store_error_in_the_runner_loop_is_retried_and_the_api_keeps_serving(
    tmp_path: Path,
) -> None:
    with serving(settings(tmp_path)) as client:
        upload(client, b"{}\n")  # opens the store
        store = faulty(client)
        store.fail("claim", 2, sqlite3.OperationalError("database or disk is full"))
        batch = run_batch(client, *LINES)
        assert counts(batch) == (3, 3, 0)
        assert client.get("/v1/files", headers=AUTH).status_code == 200
        assert client.get("/v1/batches", headers=AUTH).status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 200 and "batch_runner" not in ready.json()


def test_ready_fails_only_once_the_runner_has_failed_for_longer_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "FAILING_BOUND_S", 0.6)
    with serving(settings(tmp_path)) as client:
        upload(client, b"{}\n")
        store = faulty(client)
        store.fail("claim", 1000, sqlite3.OperationalError("database is locked"))
        service_of(client).wake()
        deadline = time.monotonic() + 5
        while (ready := client.get("/ready")).json().get("batch_runner") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ready.status_code == 200
        assert ready.json()["batch_runner"]["state"] == "retrying"
        assert "database is locked" in ready.json()["batch_runner"]["last_error"]
        while (ready := client.get("/ready")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.json()["status"] == "not ready"
        metrics = client.get("/metrics", headers=AUTH).text
        assert 'embedding_gateway_batch_runner_state{state="retrying"} 1.0' in metrics
        assert "embedding_gateway_batch_runner_errors_total" in metrics
        store.fail("claim", 0)  # healed
        batch = run_batch(client, *LINES)
        assert counts(batch) == (3, 3, 0)
        assert client.get("/ready").status_code == 200


def test_a_line_whose_record_fails_goes_to_the_error_file(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        upload(client, b"{}\n")
        store = faulty(client)
        store.fail("record_line", 1, when=lambda batch_id, line, **kw: line == 2 and kw["ok"])
        batch = run_batch(client, *LINES)
        assert counts(batch) == (3, 2, 1)
        assert [line["custom_id"] for line in content(client, batch["output_file_id"])] == [
            "r0",
            "r2",
        ]
        (error,) = content(client, batch["error_file_id"])
        assert error["custom_id"] == "r1" and error["error"]["code"] == "internal_error"


class FullDisk:
    """Partial files of which the first write of a line holding `marker` fails half-way, as
    a write that runs out of disk space does."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker

    def open(self, file: Any) -> Any:
        disk = self

        class Partial:
            def write(self, data: bytes) -> int:
                if disk.marker and disk.marker in data:
                    disk.marker = b""
                    file.write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")
                return int(file.write(data))

            def __getattr__(self, name: str) -> Any:
                return getattr(file, name)

        return Partial()


def test_a_line_whose_write_fails_half_way_goes_to_the_error_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened, disk = runner.open_private, FullDisk(b'"r1"')
    monkeypatch.setattr(runner, "open_private", lambda path, size: disk.open(opened(path, size)))
    with serving(settings(tmp_path)) as client:
        batch = run_batch(client, *LINES)
        assert counts(batch) == (3, 2, 1)
        outputs = content(client, batch["output_file_id"])  # every line whole JSON
        assert sorted(line["custom_id"] for line in outputs) == ["r0", "r2"]
        (error,) = content(client, batch["error_file_id"])
        assert error["custom_id"] == "r1" and error["error"]["code"] == "internal_error"


def test_when_storing_fails_entirely_the_batch_stops_and_resumes_without_losing_a_line(
    tmp_path: Path,
) -> None:
    with serving(settings(tmp_path)) as client:
        upload(client, b"{}\n")
        store = faulty(client)
        # The line's record fails, and so does recording it as failed: the batch stops.
        store.fail("record_line", 2, when=lambda batch_id, line, **kw: line == 3)
        batch = run_batch(client, *LINES, timeout_s=20)
        total, completed, failed = counts(batch)
        assert (total, completed + failed) == (3, 3)
        outputs = content(client, batch["output_file_id"])
        errors = content(client, batch["error_file_id"])
        assert sorted(line["custom_id"] for line in outputs + errors) == ["r0", "r1", "r2"]


def test_a_batch_whose_output_passes_the_cap_fails_naming_the_cap(tmp_path: Path) -> None:
    many = {"model": "fake", "input": ["a"] * 50}
    with serving(settings(tmp_path, batch_max_output_bytes=20_000)) as client:
        batch = run_batch(client, many, many, many, statuses=("failed",))
        assert batch["errors"]["data"][0]["code"] == "output_too_large"
        assert "--batch-max-output-bytes" in batch["errors"]["data"][0]["message"]
        total, completed, failed = counts(batch)
        assert total == 3 and completed + failed == 3
        assert list((tmp_path / "data" / "partial").glob("batch_*")) == []


def test_a_batch_pauses_while_the_disk_is_nearly_full_and_resumes_after(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        service = service_of(client)
        service.free_bytes = lambda folder: 0
        file_id = upload(client, jsonl(*LINES)).json()["id"]  # the upload checks on its own
        batch_id = create(client, file_id).json()["id"]
        deadline = time.monotonic() + 5
        while (ready := client.get("/ready")).json().get("batch_runner") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ready.status_code == 200 and ready.json()["batch_runner"]["state"] == "paused"
        batch = client.get(f"/v1/batches/{batch_id}", headers=AUTH).json()
        assert batch["status"] == "in_progress" and counts(batch) == (3, 0, 0)
        service.free_bytes = lambda folder: 1 << 50
        assert counts(wait_status(client, batch_id, ("completed",), 15)) == (3, 3, 0)


def test_a_line_over_the_body_limit_is_an_error_line_without_being_parsed(
    tmp_path: Path,
) -> None:
    huge = {"model": "fake", "input": "x" * 5000}
    with serving(settings(tmp_path, max_body_bytes=4000)) as client:
        batch = run_batch(client, LINES[0], huge, LINES[1])
        assert counts(batch) == (3, 2, 1)
        (error,) = content(client, batch["error_file_id"])
        assert error["error"]["code"] == "line_too_large"
        assert error["custom_id"] is None
        assert "--max-body-bytes" in error["error"]["message"]


def test_bounded_lines_numbers_lines_as_the_file_has_them_and_measures_long_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"short\n\n" + b"y" * 100 + b"\nlast")
    assert list(bounded_lines(path, 10)) == [(1, b"short\n"), (3, Oversize(100)), (4, b"last")]


def test_chunks_cover_every_request_once_and_start_where_their_first_line_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n\nb\n" + b"y" * 100 + b"\nc\n\nd\ne")
    chunks = cut_chunks(path, 10, size=2)
    assert chunks == [
        ChunkBounds(1, 4, 0, 2),  # a, (blank), b
        ChunkBounds(4, 7, 5, 2),  # the long line, c, (blank)
        ChunkBounds(7, 9, 109, 2),  # d, e
    ]
    numbers = [
        number
        for chunk in chunks
        for number, _ in bounded_lines(path, 10, chunk.first_byte, chunk.first_line)
        if number < chunk.end_line
    ]
    assert numbers == [number for number, _ in bounded_lines(path, 10)]


def test_a_small_batch_is_cut_into_enough_chunks_for_several_processes() -> None:
    assert runner.chunk_size(1) == 1
    assert runner.chunk_size(100) == 13  # 8 chunks
    assert runner.chunk_size(10_000) == runner.CHUNK_LINES


def _chunked_batch(store: Store, size: int) -> str:
    """A batch of `LINES` in `store`, validated and cut into chunks of `size` lines."""
    file_id = new_file_id()
    store.file_path(file_id).write_bytes(jsonl(*LINES))
    store.add_file(file_id, "in.jsonl", "batch", 1, None)
    batch_id: str = store.add_batch(
        endpoint="/v1/embeddings",
        input_file_id=file_id,
        completion_window="24h",
        window_s=3600,
        metadata=None,
        output_expires_s=3600,
    )["id"]
    bounds = cut_chunks(store.file_path(file_id), 1 << 20, size=size)
    assert store.add_chunks(batch_id, bounds, total=len(LINES))
    return batch_id


def _ended(service: BatchService, batch_id: str) -> dict:
    deadline = time.monotonic() + 15
    while (done := batch_object(service.store.existing_batch(batch_id)))["status"] not in (
        "completed", "failed"
    ):  # fmt: skip
        assert time.monotonic() < deadline, done
        time.sleep(0.02)
    return done


def test_a_chunk_whose_holder_died_is_resumed_after_its_recorded_line_and_bytes(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "data")
    batch_id = _chunked_batch(store, size=3)
    # A process ran line 1 and recorded it, wrote half of line 2 and died.
    assert store.claim_chunk("dead", lease_s=0.05) is not None
    output, _ = store.part_paths(batch_id, 0)
    recorded = b'{"custom_id": "r0", "recorded": true}\n'
    output.write_bytes(recorded + b'{"custom_id": "r1", "respo')
    store.record_line(batch_id, 1, chunk=0, owner="dead", ok=True, out_bytes=len(recorded),
                      err_bytes=0, grown=(len(recorded), 0))  # fmt: skip
    store.close()
    time.sleep(0.1)  # its lease lapses

    with serving(settings(tmp_path)) as client:
        service = service_of(client)
        done = _ended(service, batch_id)
        assert counts(done) == (3, 3, 0)
        assert service.store.chunks(batch_id) == []
        text = service.store.file_path(done["output_file_id"]).read_bytes()
    lines = text.splitlines(keepends=True)
    assert lines[0] == recorded
    assert [json.loads(line)["custom_id"] for line in lines] == ["r0", "r1", "r2"]
    assert not list((tmp_path / "data" / "partial").glob("batch_*"))


def test_a_finalizer_that_died_while_joining_is_replaced_and_the_join_done_once(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "data")
    batch_id = _chunked_batch(store, size=1)
    for number in range(3):  # every chunk done by "dead", which won the finalizing
        assert store.claim_chunk("dead", lease_s=30) is not None
        output, _ = store.part_paths(batch_id, number)
        line = f'{{"custom_id": "r{number}"}}\n'.encode()
        output.write_bytes(line)
        store.record_line(batch_id, number + 1, chunk=number, owner="dead", ok=True,
                          out_bytes=len(line), err_bytes=0, grown=(len(line), 0))  # fmt: skip
        assert store.finish_chunk(batch_id, number, "dead")
    assert store.try_finalize(batch_id, "dead", lease_s=0.05)
    out_path, _ = store.partial_paths(batch_id)
    out_path.write_bytes(b'{"custom_id": "r0"}\n{"cus')  # it died joining
    store.close()
    time.sleep(0.1)  # its lease lapses

    with serving(settings(tmp_path)) as client:
        service = service_of(client)
        done = _ended(service, batch_id)
        assert counts(done) == (3, 3, 0)
        text = service.store.file_path(done["output_file_id"]).read_bytes()
    assert [json.loads(line)["custom_id"] for line in text.splitlines()] == ["r0", "r1", "r2"]


def test_partial_files_of_ended_batches_are_removed_by_the_cleanup(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        batch = run_batch(client, *LINES)
        service = service_of(client)
        leftovers = service.store.partial_paths(batch["id"])
        for path in leftovers:
            path.write_bytes(b"left behind\n")
        service.cleanup()
        assert not any(path.exists() for path in leftovers)


def test_the_data_folder_and_its_files_are_private(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        batch = run_batch(client, *LINES)
        root = tmp_path / "data"
        for folder in (root, root / "files", root / "partial"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for file in [root / "batches.sqlite3", *(root / "files").iterdir()]:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert batch["output_file_id"] is not None


def test_a_unicode_digit_limit_is_a_400(tmp_path: Path) -> None:
    with serving(settings(tmp_path)) as client:
        response = client.get("/v1/files?limit=\u00b2", headers=AUTH)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "limit"


def test_lines_are_read_and_large_ones_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded: list[str] = []
    original = asyncio.to_thread

    async def spy(function, *args, **kwargs):
        threaded.append(getattr(function, "__name__", ""))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(lines, "_PARSE_INLINE_BYTES", 10)
    monkeypatch.setattr(asyncio, "to_thread", spy)
    with serving(settings(tmp_path)) as client:
        assert counts(run_batch(client, *LINES)) == (3, 3, 0)
    assert "_take" in threaded  # reading
    assert threaded.count("_checked_line") == 3  # parsing
