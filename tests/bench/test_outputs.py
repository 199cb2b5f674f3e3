"""bench/outputs.py: each output's row beside its dense-only row, and the bodies it sends."""

from __future__ import annotations

import orjson

from bench import outputs


def _row(key: str, baseline: str | None, texts_per_s: float, p50_ms: float) -> dict:
    row = next(r for r in outputs.ROWS if r.key == key)
    return {
        "key": key,
        "label": row.label,
        "model": row.model,
        "route": row.route,
        "baseline": baseline,
        "texts_per_s": texts_per_s,
        "p50_ms": p50_ms,
        "p99_ms": 2 * p50_ms,
        "errors": 0,
        "rounds_texts_per_s": [texts_per_s, texts_per_s / 2],
    }


def _result(rows: list[dict]) -> dict:
    return {
        "meta": {
            "date_utc": "2026-11-30 10:00",
            "command": "python -m bench.outputs --quick",
            "cpus": 2,
            "cpu_model": "cpu",
            "loadavg_start": [1.0, 1.5, 2.0],
            "loadavg_end": [2.25, 1.75, 2.0],
            "wall_s": 90,
            "duration_s": 3.0,
            "rounds": 2,
            "concurrency": 8,
            "inputs": 16,
            "documents": 32,
            "words": 12,
            "models": {"bge-m3": "small"},
        },
        "rows": rows,
    }


def test_each_row_names_a_dense_only_row_measured_before_it() -> None:
    seen: set[str] = set()
    for row in outputs.ROWS:
        assert row.baseline is None or row.baseline in seen, row.key
        seen.add(row.key)
    assert {r.key for r in outputs.ROWS if r.baseline is None} == {
        "bge_m3_dense",
        "minilm_dense",
        "rerank_dense",
    }


def test_a_row_shows_its_dense_only_figures_and_the_ratio() -> None:
    rows = [
        _row("bge_m3_dense", None, 800.0, 150.0),
        _row("bge_m3_colbert", "bge_m3_dense", 200.0, 600.0),
    ]
    table = outputs.table(rows)
    assert (
        "| dense | bge-m3 | `/v1/embeddings` | 800.0 | 800 / 400 | 150.0 / 300.0 | - | - "
        "| dense-only |" in table
    )
    assert (
        "| dense + sparse + colbert | bge-m3 | `/v1/embeddings` | 200.0 | 200 / 100 "
        "| 600.0 / 1,200.0 | 800.0 | 150.0 | 0.25x |" in table
    )


def test_a_failed_row_has_no_ratio_and_says_why() -> None:
    failed = {**_row("splade_sparse", "minilm_dense", 0, 0), "failed": "answered 400"}
    for key in ("texts_per_s", "p50_ms", "p99_ms", "errors"):
        del failed[key]
    failed["rounds_texts_per_s"] = []
    result = _result([_row("minilm_dense", None, 500.0, 200.0), failed])
    assert outputs.ratios(result["rows"]) == {"splade_sparse": None}
    text = outputs.markdown(result)
    assert "| sparse | splade | `/embed_sparse` | - | - | failed | 500.0 | 200.0 | - |" in text
    assert "- sparse (splade, `/embed_sparse`) failed: answered 400" in text


def test_the_heading_gives_the_run_and_says_the_models_are_tiny() -> None:
    text = outputs.markdown(_result([_row("minilm_dense", None, 500.0, 200.0)]))
    assert text.startswith(
        "Run 2026-11-30 10:00 UTC (`python -m bench.outputs --quick`, took 1.5 minutes), "
        "3 s of load per row, the best of 2 rounds kept, 2 x cpu; load average at start 1.00, 1.50, 2.00, at end "
        "2.25, 1.75, 2.00."
    )
    assert "**Tiny seeded models on CPU**" in text
    assert "- `bge-m3`: small" in text


def test_bodies_ask_each_route_for_its_output() -> None:
    texts = [f"text {i}" for i in range(100)]
    tokens = [4] * 100
    by_key = {r.key: r for r in outputs.ROWS}

    def first(key: str) -> dict:
        body = outputs.bodies(by_key[key], texts, tokens, count=2)[1]
        return orjson.loads(body.data)

    colbert = first("bge_m3_colbert")
    assert colbert["input"] == texts[16:32]
    assert colbert["return_sparse"] is colbert["return_colbert_vecs"] is True
    assert first("classify")["inputs"] == [[t] for t in texts[16:32]]
    assert first("minilm_tokens") == {"model": outputs.MINILM, "inputs": texts[16:32]}
    hybrid = first("rerank_hybrid")
    assert (hybrid["query"], hybrid["documents"], hybrid["mode"]) == (
        texts[33],
        texts[34:66],
        "hybrid",
    )
    rerank = outputs.bodies(by_key["rerank_dense"], texts, tokens, count=1)[0]
    assert (rerank.texts, rerank.tokens) == (32, 33 * 4)


def test_a_row_keeps_its_fastest_round_whole() -> None:
    entry: dict = {"key": "classify", "rounds_texts_per_s": []}
    for rate, p50 in ((300.04, 90.0), (450.0, 70.0), (400.0, 60.0)):
        outputs.keep_best(entry, {"texts_per_s": rate, "p50_ms": p50})
    assert entry == {
        "key": "classify",
        "rounds_texts_per_s": [300.0, 450.0, 400.0],
        "texts_per_s": 450.0,
        "p50_ms": 70.0,
    }
