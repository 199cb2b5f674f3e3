"""A fleet: gateway processes sharing one PostgreSQL database and one batch folder. Any
replica answers any file or batch call (a cancel included), one batch advances on every
replica at once (by chunk), a replica killed mid-batch leaves its chunks to another, which
finishes them without losing or repeating a line, and a new batch reaches the other
replicas by notification, not at their poll."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from adapters.fake import FakeEngine
from gateway.batches import runner
from harness.gateway import Gateway, start_gateway
from harness.postgres import fresh_database
from tests.conftest import serving
from tests.gateway.batches.test_api import create, settings, wait_status
from tests.gateway.batches.test_api import jsonl as jsonl_of
from tests.gateway.batches.test_api import upload as upload_to
from tests.gateway.batches.test_openai_client import client_of, jsonl, line, upload, wait_for
from tests.gateway.batches.test_runner_faults import service_of

pytestmark = pytest.mark.process


def _replica(workdir: Path, url: str, shared: Path) -> Gateway:
    return start_gateway(
        workdir,
        fake_models={"fake": {"latency_s": 0.05}},
        args=["--batch-dir", str(shared), "--batch-database-url", url],
    )


def _chunk_holders(url: str, batch_id: str) -> dict[int, int]:
    """Process id of each replica holding or having finished chunks of the batch (owners are
    `host:pid:tag`) -> the lines those chunks recorded."""
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT lease_owner, SUM(completed + failed) FROM chunks WHERE batch_id = %s AND "
            "lease_owner IS NOT NULL GROUP BY lease_owner",
            (batch_id,),
        ).fetchall()
    return {int(owner.split(":")[1]): int(lines) for owner, lines in rows}


def _wait_for_holders(url: str, batch_id: str, pids: set[int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while set(_chunk_holders(url, batch_id)) != pids:
        assert time.monotonic() < deadline, _chunk_holders(url, batch_id)
        time.sleep(0.02)


def test_a_replica_killed_mid_batch_leaves_its_chunks_to_another_without_loss_or_repeat(
    postgres: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    shared = tmp_path / "shared"
    replicas = [_replica(tmp_path / name, url, shared) for name in ("a", "b")]
    total = 300
    lines = [line(f"r{i}", {"model": "fake", "input": f"text {i}"}) for i in range(total)]
    try:
        # Uploaded through one replica, created and followed through the other.
        with client_of(replicas[0]) as first, client_of(replicas[1]) as second:
            file_id = upload(first, lines)
            assert second.files.retrieve(file_id).bytes > 0
            batch = second.batches.create(
                input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
            )
            _wait_for_holders(url, batch.id, {r.process.pid for r in replicas})
            wait_for(first, batch.id, lambda b: b.request_counts.completed >= 40)
        killed, survivor = replicas
        killed.process.send_signal(signal.SIGKILL)  # no drain, no lease given back
        killed.process.wait(10)
        recorded = _chunk_holders(url, batch.id)[killed.process.pid]
        assert 0 < recorded < total

        with client_of(survivor) as client:
            done = wait_for(client, batch.id, timeout_s=90)  # after the dead leases lapse
            outputs = jsonl(client, done.output_file_id)
        assert done.status == "completed"
        assert done.request_counts.model_dump() == {"total": total, "completed": total, "failed": 0}
        # Every line answered exactly once, in the input's order: none lost, none twice.
        assert [o["custom_id"] for o in outputs] == [f"r{i}" for i in range(total)]
        # The survivor ran every line but those the killed replica had recorded.
        assert survivor.stats("fake")["completed"] == total - recorded
    finally:
        for replica in replicas:
            replica.stop()


def test_one_batch_advances_on_both_replicas_and_each_line_runs_once(
    postgres: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    shared = tmp_path / "shared"
    replicas = [_replica(tmp_path / name, url, shared) for name in ("a", "b")]
    lines = [line(f"r{i}", {"model": "fake", "input": f"text {i}"}) for i in range(400)]
    pids = {replica.process.pid for replica in replicas}
    try:
        with client_of(replicas[0]) as first, client_of(replicas[1]) as second:
            file_id = upload(first, lines)
            batches = [
                client.batches.create(
                    input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
                )
                for client in (first, second)
            ]
            for batch in batches:  # both replicas record chunks of each batch
                _wait_for_holders(url, batch.id, pids)
            for batch in batches:
                done = wait_for(second, batch.id)
                assert done.status == "completed"
                outputs = jsonl(second, done.output_file_id)
                assert [o["custom_id"] for o in outputs] == [f"r{i}" for i in range(400)]
        calls = [replica.stats("fake")["calls"] for replica in replicas]
        assert sum(calls) == 800 and min(calls) > 0, calls
    finally:
        for replica in replicas:
            replica.stop()


def test_a_cancel_through_one_replica_stops_the_batch_running_on_both(
    postgres: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    shared = tmp_path / "shared"
    replicas = [_replica(tmp_path / name, url, shared) for name in ("a", "b")]
    lines = [line(f"r{i}", {"model": "fake", "input": f"text {i}"}) for i in range(2000)]
    try:
        with client_of(replicas[0]) as client:
            batch = client.batches.create(
                input_file_id=upload(client, lines),
                endpoint="/v1/embeddings",
                completion_window="24h",
            )
            _wait_for_holders(url, batch.id, {r.process.pid for r in replicas})
            wait_for(client, batch.id, lambda b: b.request_counts.completed >= 5)
        with client_of(replicas[1]) as client:
            assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
            done = wait_for(client, batch.id)
            assert done.status == "cancelled"
            finished = done.request_counts.completed
            assert 5 <= finished < 2000
            outputs = jsonl(client, done.output_file_id)
        assert len(outputs) == len({o["custom_id"] for o in outputs}) == finished
        stats = [replica.stats("fake") for replica in replicas]
        assert sum(s["completed"] for s in stats) >= finished
    finally:
        for replica in replicas:
            replica.stop()


def test_a_second_replica_starts_on_a_new_batch_when_notified_not_at_its_poll(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "_IDLE_POLL_S", 600.0)  # a poll would come far too late
    url = fresh_database(postgres)
    options = {"batch_database_url": url}
    with (
        serving(settings(tmp_path, **options), fake=FakeEngine(latency_s=0.05)) as a,
        serving(settings(tmp_path, **options), fake=FakeEngine(latency_s=0.05)) as b,
    ):
        time.sleep(0.5)  # both runners idle, listening
        lines = jsonl_of(*[{"model": "fake", "input": f"t{i}"} for i in range(400)])
        file_id = upload_to(a, lines)
        started = time.monotonic()
        batch_id = create(a, file_id.json()["id"]).json()["id"]
        second = service_of(b)
        while not any(row["lease_owner"] == second.owner for row in second.store.chunks(batch_id)):
            assert time.monotonic() - started < 1.0, "the second replica has not started"
            time.sleep(0.01)
        assert wait_status(a, batch_id, ("completed",), 60)["request_counts"]["completed"] == 400
