"""A gateway killed in the middle of a Batch API job, through the real vLLM engine: a new
gateway on the same batch folder resumes the job, runs only the lines not recorded before the
crash, and the output holds every line once, with sentence-transformers' vectors."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import psutil

from harness.gateway import Gateway, start_gateway
from tests.conftest import batch_progress
from tests.e2e.conftest import MINILM

LINES = 240
INPUTS_PER_LINE = 4


def _texts(line: int) -> list[str]:
    return [
        f"document {line}, passage {j}: resumable bulk indexing." for j in range(INPUTS_PER_LINE)
    ]


def _start(workdir: Path, batch_dir: Path) -> Gateway:
    return start_gateway(
        workdir,
        models=[{"name": MINILM, "path": "builtin:" + MINILM}],
        args=["--batch-dir", str(batch_dir)],
        ready_timeout=600,
    )


def _client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


def _inputs_processed(gateway: Gateway) -> float:
    for line in httpx.get(gateway.base_url + "/metrics").text.splitlines():
        if line.startswith("embedding_gateway_inputs_total{") and f'model="{MINILM}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _crash(gateway: Gateway) -> None:
    """SIGKILL, as the OOM killer sends it: no drain, no lease released. Its engine processes,
    orphaned, are killed too (in a container they go with it)."""
    children = psutil.Process(gateway.process.pid).children(recursive=True)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)


def test_a_killed_gateway_resumes_the_batch_with_the_reference_vectors(
    tmp_path: Path, st_minilm
) -> None:
    batch_dir = tmp_path / "batches"
    lines = [
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": MINILM, "input": _texts(i)},
            }
        )
        for i in range(LINES)
    ]
    first = _start(tmp_path / "first", batch_dir)
    try:
        with _client(first) as client:
            uploaded = client.files.create(
                file=("corpus.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch"
            )
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
            )
            deadline = time.monotonic() + 300
            while client.batches.retrieve(batch.id).request_counts.completed < 40:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        _crash(first)
    finally:
        first.stop()
    recorded, status = batch_progress(batch_dir, batch.id)
    assert status == "in_progress" and 40 <= recorded < LINES

    second = _start(tmp_path / "second", batch_dir)
    try:
        with _client(second) as client:
            deadline = time.monotonic() + 300  # from after the crashed owner's lease expires
            done = client.batches.retrieve(batch.id)
            while done.status not in ("completed", "failed", "cancelled", "expired"):
                assert time.monotonic() < deadline, done
                time.sleep(0.2)
                done = client.batches.retrieve(batch.id)
            output = client.files.content(done.output_file_id).text.splitlines()
            # Only the lines not recorded before the crash ran again.
            assert _inputs_processed(second) == (LINES - recorded) * INPUTS_PER_LINE
    finally:
        second.stop()
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": LINES, "completed": LINES, "failed": 0}
    results = [json.loads(text) for text in output]
    assert sorted(r["custom_id"] for r in results) == sorted(f"line-{i}" for i in range(LINES))
    for result in results:
        line = int(result["custom_id"].removeprefix("line-"))
        got = np.array([d["embedding"] for d in result["response"]["body"]["data"]])
        want = st_minilm.encode(_texts(line), normalize_embeddings=True)
        np.testing.assert_allclose(got, want, atol=1e-5)
