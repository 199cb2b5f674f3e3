"""`embedding-gateway embed` through the real vLLM engine: progress lines, a real SIGKILL of
the CLI process midway, a rerun that resumes, and vectors equal to sentence-transformers'.
Three engine starts in all (the killed run, the rerun, and a run asking for an output the
model lacks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from bench.bulk import corpus

pytestmark = pytest.mark.engine

from harness.paths import REPO

DOCUMENTS = 2000


def test_sigkill_midway_and_rerun_give_every_vector_once_equal_to_the_reference(
    tmp_path: Path, minilm_path: str
) -> None:
    texts = corpus(DOCUMENTS, seed=3)
    source, output = tmp_path / "docs.txt", tmp_path / "vectors.parquet"
    source.write_text("\n".join(texts) + "\n")
    # Small batches, so that the kill lands between many committed chunks.
    command = [
        sys.executable,
        "-m",
        "gateway",
        "embed",
        str(source),
        "-o",
        str(output),
        "--batch-tokens",
        "2048",
        "--progress-interval-s",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    manifest = tmp_path / "vectors.parquet.partial" / "manifest.json"
    log_path = tmp_path / "first.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:
            if manifest.exists() and json.loads(manifest.read_text())["documents"] >= 400:
                break
            time.sleep(0.05)
        engine_processes = psutil.Process(first.pid).children(recursive=True)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        # vLLM's EngineCore does not notice that its parent was SIGKILLed; the CLI's watcher
        # (gateway/bulk/orphans.py) ends it.
        _, alive = psutil.wait_procs(engine_processes, timeout=30)
        for orphan in alive:
            orphan.kill()
        assert alive == [], f"engine processes left after the CLI was killed: {alive}"
    finally:
        if first.poll() is None:  # the test failed before the kill: do not leave it running
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    first_log = log_path.read_text(errors="replace")
    saved = json.loads(manifest.read_text())["documents"]
    assert first.returncode == -signal.SIGKILL and 400 <= saved < DOCUMENTS, first_log[-3000:]
    assert not output.exists()
    assert "documents (" in first_log and "docs/s" in first_log and "ETA" in first_log

    rerun = subprocess.run(
        command, cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"embedded {DOCUMENTS - saved:,} documents" in rerun.stderr
    table = pq.read_table(output)
    assert table.column("id").to_pylist() == list(range(DOCUMENTS))  # no gap, no duplicate
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    assert len(np.unique(vectors.round(5), axis=0)) == DOCUMENTS
    assert not manifest.parent.exists()

    # Every 10th row, from both sides of the kill, against sentence-transformers.
    from sentence_transformers import SentenceTransformer

    rows = list(range(0, DOCUMENTS, 10))
    reference = SentenceTransformer(minilm_path, device="cpu").encode(
        [texts[i] for i in rows], batch_size=64
    )
    got = vectors[rows]
    cosine = np.sum(got * reference, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.9999
    assert np.allclose(got, reference, atol=1e-5)


def test_an_output_the_model_lacks_stops_the_run_before_any_document(tmp_path: Path) -> None:
    """The built-in model computes dense vectors only: asking for sparse ones is refused once
    the engine is up, naming what it computes, with nothing embedded."""
    source, output = tmp_path / "docs.txt", tmp_path / "v.jsonl"
    source.write_text("one document\nanother one\n")
    command = [sys.executable, "-m", "gateway", "embed", str(source), "-o", str(output)]
    done = subprocess.run(
        [*command, "--outputs", "dense,sparse"],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert (
        "--outputs sparse: model 'all-MiniLM-L6-v2' does not compute sparse; "
        "it computes: dense" in done.stderr
    )
    manifest = json.loads((tmp_path / "v.jsonl.partial" / "manifest.json").read_text())
    assert manifest["documents"] == 0 and not output.exists()
