"""A fleet: gateway processes sharing one PostgreSQL database and one batch folder. Any
replica answers any file or batch call (a cancel included), replicas take one batch each,
and a replica killed mid-batch leaves its batch to another, which finishes it without losing
or repeating a line."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from harness.gateway import Gateway, start_gateway
from harness.postgres import fresh_database
from tests.gateway.batches.test_openai_client import client_of, jsonl, line, upload, wait_for

pytestmark = pytest.mark.process


def _replica(workdir: Path, url: str, shared: Path) -> Gateway:
    return start_gateway(
        workdir,
        fake_models={"fake": {"latency_s": 0.05}},
        args=["--batch-dir", str(shared), "--batch-database-url", url],
    )


def _lease_pid(url: str, batch_id: str) -> int | None:
    """The process id of the replica holding the batch's lease (`host:pid:tag`)."""
    with psycopg.connect(url) as db:
        row = db.execute("SELECT lease_owner FROM batches WHERE id = %s", (batch_id,)).fetchone()
    return int(row[0].split(":")[1]) if row and row[0] else None


def _recorded(url: str, batch_id: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT completed FROM batches WHERE id = %s", (batch_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_replica_killed_mid_batch_leaves_the_batch_to_another_without_loss_or_repeat(
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
            wait_for(first, batch.id, lambda b: b.request_counts.completed >= 20)
        holder = _lease_pid(url, batch.id)
        killed = next(r for r in replicas if r.process.pid == holder)
        survivor = next(r for r in replicas if r is not killed)
        killed.process.send_signal(signal.SIGKILL)  # no drain, no lease released
        killed.process.wait(10)
        recorded = _recorded(url, batch.id)
        assert 20 <= recorded < total

        with client_of(survivor) as client:
            done = wait_for(client, batch.id, timeout_s=90)  # after the dead lease lapses
            outputs = jsonl(client, done.output_file_id)
        assert done.status == "completed"
        assert done.request_counts.model_dump() == {"total": total, "completed": total, "failed": 0}
        # Every line answered exactly once: none lost, none written twice.
        assert sorted(o["custom_id"] for o in outputs) == sorted(f"r{i}" for i in range(total))
        # The survivor ran only the lines the killed replica had not recorded.
        assert survivor.stats("fake")["completed"] == total - recorded
    finally:
        for replica in replicas:
            replica.stop()


def test_batches_created_together_run_on_different_replicas(postgres: str, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    shared = tmp_path / "shared"
    replicas = [_replica(tmp_path / name, url, shared) for name in ("a", "b")]
    lines = [line(f"r{i}", {"model": "fake", "input": f"text {i}"}) for i in range(400)]
    pids = {replica.process.pid for replica in replicas}
    try:
        with client_of(replicas[0]) as first, client_of(replicas[1]) as second:
            file_id = upload(first, lines)
            # One create call to each replica; each wakes its own runner, and the claims
            # (FOR UPDATE SKIP LOCKED) give them one batch each, whichever claims first.
            batches = [
                client.batches.create(
                    input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
                )
                for client in (first, second)
            ]
            for batch in batches:
                wait_for(first, batch.id, lambda b: b.request_counts.completed > 0)
            assert {_lease_pid(url, batch.id) for batch in batches} == pids
            for batch in batches:
                done = wait_for(second, batch.id)
                assert done.status == "completed"
                outputs = jsonl(second, done.output_file_id)
                assert sorted(o["custom_id"] for o in outputs) == sorted(
                    f"r{i}" for i in range(400)
                )
        assert [replica.stats("fake")["calls"] for replica in replicas] == [400, 400]
    finally:
        for replica in replicas:
            replica.stop()


def test_a_cancel_through_one_replica_stops_the_batch_running_on_another(
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
            wait_for(client, batch.id, lambda b: b.request_counts.completed >= 5)
        holder = _lease_pid(url, batch.id)
        other = next(r for r in replicas if r.process.pid != holder)
        with client_of(other) as client:
            assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
            done = wait_for(client, batch.id)
            assert done.status == "cancelled"
            finished = done.request_counts.completed
            assert 5 <= finished < 2000
            assert len(jsonl(client, done.output_file_id)) == finished
    finally:
        for replica in replicas:
            replica.stop()
