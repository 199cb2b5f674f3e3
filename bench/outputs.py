"""`make bench-outputs`: what each output beyond one dense vector costs, against dense vectors
from the same encoder (or one of its size), through one gateway.

    python -m bench.outputs [--quick] [--duration S]

One gateway process serves four tiny seeded models built into a temporary folder
(harness/models.py): the built-in MiniLM, a SPLADE model and a 3-label classifier on MiniLM's
encoder, and a small bge-m3-shaped XLM-RoBERTa. Each row is a closed loop (harness.load) of
short texts, 8 clients, 16 texts a request (rerank: a query and 32 documents), and names the
dense-only row it is compared with, measured just before it: the bge-m3 outputs in one
`/v1/embeddings` call against bge-m3's dense alone; SPLADE's `/embed_sparse`, the
classifier's `/predict` and MiniLM's `/embed_all` against MiniLM's `/embed`; hybrid rerank
against dense-mode rerank on bge-m3. Results: a table on stdout, bench/results/outputs.json,
and the generated `outputs` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from bench import cells as C
from bench.saved import run_facts, save
from harness.load import Body, closed_loop
from harness.paths import REPO

RESULTS = REPO / "bench" / "results" / "outputs.json"
SECTION = "outputs"
TARGETS = ("docs/benchmarks.md",)
CONCURRENCY = 8
INPUTS = 16
DOCUMENTS = 32
MINILM = C.MODEL_NAME
# Served name -> what it is (the table's footnote).
MODELS = {
    "bge-m3": "a 2-layer, 128-wide XLM-RoBERTa with bge-m3's sparse and ColBERT heads",
    MINILM: "the built-in all-MiniLM-L6-v2 (6 layers, 384 wide)",
    "splade": "MiniLM's encoder under a masked-LM head, SPLADE max pooling",
    "classifier": "MiniLM's encoder under a 3-label classification head",
}


@dataclass(frozen=True)
class Row:
    """One measured row: `kind` builds its bodies; `baseline` is the key of the dense-only
    row it is compared with (None: it is one)."""

    key: str
    label: str
    model: str
    route: str
    kind: str  # embeddings | tei | predict | rerank
    baseline: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Row("bge_m3_dense", "dense", "bge-m3", "/v1/embeddings", "embeddings"),
    Row(
        "bge_m3_sparse",
        "dense + sparse",
        "bge-m3",
        "/v1/embeddings",
        "embeddings",
        "bge_m3_dense",
        {"return_sparse": True},
    ),
    Row(
        "bge_m3_colbert",
        "dense + sparse + colbert",
        "bge-m3",
        "/v1/embeddings",
        "embeddings",
        "bge_m3_dense",
        {"return_sparse": True, "return_colbert_vecs": True},
    ),
    Row("minilm_dense", "dense", MINILM, "/embed", "tei"),
    Row("splade_sparse", "sparse", "splade", "/embed_sparse", "tei", "minilm_dense"),
    Row("classify", "classification", "classifier", "/predict", "predict", "minilm_dense"),
    Row("minilm_tokens", "token vectors", MINILM, "/embed_all", "tei", "minilm_dense"),
    Row(
        "rerank_dense",
        "rerank, mode dense",
        "bge-m3",
        "/v1/rerank",
        "rerank",
        extra={"mode": "dense"},
    ),
    Row(
        "rerank_hybrid",
        "rerank, mode hybrid",
        "bge-m3",
        "/v1/rerank",
        "rerank",
        "rerank_dense",
        {"mode": "hybrid"},
    ),
)


def bodies(row: Row, texts: Sequence[str], tokens: Sequence[int], count: int = 128) -> list[Body]:
    """`count` request bodies of `row`'s kind, each over its own window of `texts`."""
    per = DOCUMENTS + 1 if row.kind == "rerank" else INPUTS
    out = []
    for i in range(count):
        idx = [(i * per + j) % len(texts) for j in range(per)]
        window = [texts[k] for k in idx]
        body: dict[str, Any] = {"model": row.model}
        if row.kind == "embeddings":
            body |= {"input": window, "encoding_format": "float"}
        elif row.kind == "tei":
            body["inputs"] = window
        elif row.kind == "predict":
            body["inputs"] = [[text] for text in window]  # a batch of single texts
        else:
            body |= {"query": window[0], "documents": window[1:], "top_n": DOCUMENTS}
        body |= row.extra
        counted = DOCUMENTS if row.kind == "rerank" else INPUTS
        out.append(Body(orjson.dumps(body), counted, sum(tokens[k] for k in idx)))
    return out


def build_models(folder: Path) -> list[dict[str, Any]]:
    """The gateway's `models:` list over freshly built tiny models in `folder`."""
    from harness import models

    common = {"max_model_len": 128, "gpu_memory_utilization": 0.05}
    return [
        {"name": MINILM, "path": "builtin:" + MINILM, **common},
        {"name": "splade", "path": str(models.build_splade(folder)), **common},
        {"name": "bge-m3", "path": str(models.build_bge_m3(folder)), **common},
        {"name": "classifier", "path": str(models.build_classifier(folder)), **common},
    ]


def measure(
    base_url: str, server: psutil.Process, texts: list[str], duration: float, rounds: int
) -> list[dict[str, Any]]:
    """Every row `rounds` times over, in ROWS' order; each row keeps its best round (the one
    least disturbed by whatever else shares the cores), and the texts/s of all of them."""
    from transformers import AutoTokenizer

    from gateway.config import resolve_model_path

    # Every model here reads MiniLM's WordPiece vocabulary, so one tokenizer counts for all.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:" + MINILM))
    tokens = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    rows: dict[str, dict[str, Any]] = {
        row.key: {
            "key": row.key,
            "label": row.label,
            "model": row.model,
            "route": row.route,
            "baseline": row.baseline,
            "rounds_texts_per_s": [],
        }
        for row in ROWS
    }
    for _ in range(rounds):
        for row in ROWS:
            time.sleep(2)  # vLLM's processes busy-poll for a second after their last request
            entry = rows[row.key]
            try:
                result = uvloop.run(
                    closed_loop(
                        base_url + row.route,
                        bodies(row, texts, tokens),
                        concurrency=CONCURRENCY,
                        duration_s=duration,
                        server=server,
                    )
                )
            except RuntimeError as exc:  # the first answer was not a 200 of the right size
                entry["failed"] = str(exc)[:300]
                print(f"{row.model:>17} {row.route:<15} {row.label:<26} FAILED: {exc}", flush=True)
                continue
            keep_best(entry, result.to_dict())
            print(
                f"{row.model:>17} {row.route:<15} {row.label:<26} "
                f"{result.texts_per_s:8.1f} texts/s p50 {result.p50_ms:8.1f} ms "
                f"p99 {result.p99_ms:8.1f} ms"
                + (f"  ERRORS {result.errors}" if result.errors else ""),
                flush=True,
            )
    return list(rows.values())


def keep_best(entry: dict[str, Any], result: dict[str, Any]) -> None:
    """Add a round's `result` to a row's `entry`: its texts/s to the rounds', and all of its
    figures in place of the entry's when it is the fastest round so far."""
    entry["rounds_texts_per_s"].append(round(result["texts_per_s"], 1))
    if result["texts_per_s"] > entry.get("texts_per_s", -1.0):
        entry |= result


# -- rendering -------------------------------------------------------------------------------


def _measured(row: dict[str, Any] | None) -> bool:
    return row is not None and "texts_per_s" in row


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each compared row's texts/s over its dense-only row's (None where either is missing)."""
    by_key = {r["key"]: r for r in rows}
    out: dict[str, float | None] = {}
    for r in rows:
        base = by_key.get(r["baseline"]) if r["baseline"] else None
        if base is None:
            continue
        ok = _measured(r) and _measured(base) and base["texts_per_s"]
        out[r["key"]] = r["texts_per_s"] / base["texts_per_s"] if ok else None
    return out


def _num(row: dict[str, Any] | None, key: str) -> str:
    return f"{row[key]:,.1f}" if row is not None and _measured(row) else "-"


def table(rows: list[dict[str, Any]]) -> str:
    by_key = {r["key"]: r for r in rows}
    ratio = ratios(rows)
    head = (
        "output",
        "model",
        "route",
        "texts/s",
        "each round",
        "p50 / p99 ms",
        "dense-only texts/s",
        "dense-only p50 ms",
        "/ dense-only",
    )
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    each = {
        r["key"]: " / ".join(f"{x:,.0f}" for x in r.get("rounds_texts_per_s", [])) or "-"
        for r in rows
    }
    for r in rows:
        base = by_key.get(r["baseline"]) if r["baseline"] else None
        if "failed" in r:
            latency = "failed"
        elif _measured(r):
            latency = f"{_num(r, 'p50_ms')} / {_num(r, 'p99_ms')}"
        else:
            latency = "-"
        if base is None:
            compared = ["-", "-", "dense-only"]
        else:
            x = ratio.get(r["key"])
            compared = [
                _num(base, "texts_per_s"),
                _num(base, "p50_ms"),
                "-" if x is None else f"{x:.2f}x",
            ]
        errors = f" ({r['errors']} errors)" if r.get("errors") else ""
        lines.append(
            f"| {r['label']}{errors} | {r['model']} | `{r['route']}` | {_num(r, 'texts_per_s')} "
            f"| {each[r['key']]} | {latency} | " + " | ".join(compared) + " |"
        )
    return "\n".join(lines)


def _rounds(rounds: int) -> str:
    return "one round" if rounds == 1 else f"the best of {rounds} rounds kept"


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_start"])
    end = ", ".join(f"{x:.2f}" for x in m["loadavg_end"])
    intro = (
        f"Run {m['date_utc']} UTC (`{m['command']}`, took {m['wall_s'] / 60:.1f} minutes), "
        f"{m['duration_s']:g} s of load per row, {_rounds(m.get('rounds', 1))}, {m['cpus']} x {m['cpu_model']}; load average "
        f"at start {load}, at end {end}. {m['concurrency']} clients, {m['inputs']} short texts "
        f"({m['words']} words) a request; rerank: a query and {m['documents']} documents "
        "(texts/s counts documents). **Tiny seeded models on CPU**: the figures show what each "
        "output costs beside dense vectors from the same encoder, not production throughput."
    )
    notes = [f"- `{name}`: {what}" for name, what in m["models"].items()]
    notes += [
        f"- {r['label']} ({r['model']}, `{r['route']}`) failed: {r['failed']}"
        for r in result["rows"]
        if "failed" in r
    ]
    return f"{intro}\n\n{table(result['rows'])}\n\n" + "\n".join(notes)


def render_saved() -> str:
    return markdown(json.loads(RESULTS.read_text()))


# -- command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outputs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of 3 s per row (a smoke run)"
    )
    parser.add_argument(
        "--rounds", type=int, help="times each row is measured, best kept (default 2, quick 1)"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of load per row (default 8, quick 3)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    started = time.monotonic()
    meta: dict[str, Any] = {
        **run_facts("bench.outputs", argv),
        "loadavg_start": os.getloadavg(),
        "mode": "quick" if args.quick else "default",
        "duration_s": duration,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "inputs": INPUTS,
        "documents": DOCUMENTS,
        "words": C.WORDS["short"],
        "models": MODELS,
    }
    from gateway.config import resolve_model_path
    from harness.gateway import start_gateway

    texts = C.make_texts(resolve_model_path("builtin:" + MINILM), "short")
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as tmp:
        work = Path(tmp)
        print("building the tiny models", flush=True)
        models = build_models(work / "models")
        gateway = start_gateway(
            work / "gateway", models=models, args=["--log-level", "warning"], ready_timeout=900
        )
        try:
            print(f"gateway ready in {time.monotonic() - started:.0f} s (models built)", flush=True)
            rows = measure(
                gateway.base_url, psutil.Process(gateway.process.pid), texts, duration, rounds
            )
        finally:
            gateway.stop()
    meta["loadavg_end"] = os.getloadavg()
    meta["wall_s"] = round(time.monotonic() - started)
    result = {"meta": meta, "rows": rows}
    save(result, args.out, default_out=RESULTS, section=SECTION, targets=TARGETS, render=markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
