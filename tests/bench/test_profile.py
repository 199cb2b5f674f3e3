"""bench/profile.py: py-spy's raw stacks put in stages, per process, as shares of a core."""

from __future__ import annotations

import pytest

from bench import profile
from harness.paths import REPO

GATEWAY = 'process 10:"python -m gateway serve"'
CORE = 'process 11:"VLLM::EngineCore"'
WORKER = 'process 12:"VLLM::Worker"'
RAW = "\n".join(
    [
        f"{GATEWAY};Runner.run (asyncio/runners.py:118) 400",
        (
            f"{GATEWAY};Runner.run (asyncio/runners.py:118);RequestResponseCycle.run_asgi "
            "(uvicorn/protocols/http/httptools_impl.py:1);create_embeddings (gateway/api/openai.py:1);"
            "VLLMEngine._token_ids (adapters/vllm/engine.py:1);encode (adapters/vllm/engine.py:2) 200"
        ),
        (
            f"{GATEWAY};Runner.run (asyncio/runners.py:118);RequestResponseCycle.run_asgi "
            "(uvicorn/protocols/http/httptools_impl.py:1);create_embeddings (gateway/api/openai.py:1) 100"
        ),
        (
            f"{GATEWAY};<module> (x.py:1);{CORE};EngineCore.step (vllm/v1/engine/core.py:1);"
            "MessageQueue.acquire_read (vllm/x.py:1);sched_yield (vllm/distributed/utils.py:46) 800"
        ),
        (
            f"{GATEWAY};<module> (x.py:1);{CORE};{WORKER};Worker.execute_model (vllm/w.py:1);"
            "GPUModelRunner._model_forward (vllm/r.py:1) 1000"
        ),
        "garbage line without a count",
    ]
)


def test_samples_go_to_the_stage_of_their_own_process() -> None:
    rows = profile.summarize(RAW, seconds=10)
    shares = {(r["process"], r["stage"]): r["core_share"] for r in rows}
    assert shares == {
        ("gateway", "event loop (uvloop, callbacks)"): pytest.approx(0.2),
        ("gateway", "tokenization"): pytest.approx(0.1),
        ("gateway", "HTTP and middleware"): pytest.approx(0.05),
        ("engine core", "waiting for the worker (spinning)"): pytest.approx(0.4),
        ("worker", "model forward"): pytest.approx(0.5),
    }
    # Gateway first, then the engine core, then the worker; the busiest stage first.
    assert [r["process"] for r in rows][:3] == ["gateway"] * 3
    assert rows[0]["stage"] == "event loop (uvloop, callbacks)"


def test_table_has_a_column_per_concurrency() -> None:
    run = {"texts_per_s": 100.0, "p50_ms": 7.0, "server_cpu_pct": 195.0}
    result = {
        "meta": {"command": "c", "date_utc": "d", "cpus": 2, "cpu_model": "x", "seconds": 10},
        "runs": [
            {**run, "concurrency": 1, "rows": profile.summarize(RAW, 10)},
            {**run, "concurrency": 8, "rows": []},
        ],
    }
    table = profile.markdown(result)
    assert "| process | stage | c=1 | c=8 |" in table
    assert "| worker | model forward | 0.50 | 0.00 |" in table


@pytest.mark.parametrize(
    "frame, stage",
    [
        ("encode_vectors (gateway/serving/encoding.py:1)", "response encoding"),
        ("json_response (gateway/http/responses.py:1)", "response encoding"),
        ("parse (gateway/api/wire.py:1)", "validation"),
        ("read_body (gateway/http/body.py:1)", "validation"),
        ("Admission.admit (gateway/serving/admission.py:1)", "admission and request guard"),
        ("run_guarded (gateway/serving/guard.py:1)", "admission and request guard"),
        ("observe (gateway/metrics.py:1)", "metrics and request log"),
        ("dispatch (gateway/http/security.py:1)", "HTTP and middleware"),
    ],
)
def test_gateway_frames_go_to_the_stage_of_their_module(frame: str, stage: str) -> None:
    assert profile.stage_of("gateway", ["Runner.run (asyncio/runners.py:118)", frame]) == stage


def test_every_gateway_file_a_stage_names_exists() -> None:
    named = [
        needle
        for _, _, needles in profile.STAGES
        for needle in needles
        if needle.startswith("gateway/") and needle.endswith(".py")
    ]
    assert named
    assert [path for path in named if not (REPO / path).is_file()] == []
