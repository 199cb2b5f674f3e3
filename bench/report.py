"""The one table (stdout and Markdown), the targets, the JSON and the PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.cells import Cell
from docgen.markers import REPO, write_section

RESULTS = REPO / "bench" / "results"
# The generated section `make bench` and `python -m bench --render-only` write in these files.
SECTION = "bench"
TARGETS = ("README.md", "docs/benchmarks.md")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def rows(result: dict, matrix: list[Cell]) -> list[dict]:
    out = []
    for cell in matrix:
        g = result.get("gateway", {}).get(cell.label)
        v = result.get("vllm", {}).get(cell.label)
        out.append(
            {
                "cell": cell.to_dict(),
                "label": cell.label,
                "gateway": g,
                "vllm": v,
                "ratio": _ratio(g and g["texts_per_s"], v and v["texts_per_s"]),
            }
        )
    return out


def table(result: dict, matrix: list[Cell]) -> str:
    head = (
        "| cell | gateway texts/s | tokens/s | p50 ms | p99 ms | vllm serve texts/s | "
        "tokens/s | p50 ms | p99 ms | gateway / vllm |\n|---|---:|---:|---:|---:|---:|---:|"
        "---:|---:|---:|\n"
    )
    lines = []
    for row in rows(result, matrix):
        cols = [row["label"]]
        for side in ("gateway", "vllm"):
            r = row[side] or {}
            cols += [
                _fmt(r.get("texts_per_s"), 1),
                _fmt(r.get("tokens_per_s")),
                _fmt(r.get("p50_ms"), 1),
                _fmt(r.get("p99_ms"), 1),
            ]
        cols.append(_fmt(row["ratio"], 2) + ("x" if row["ratio"] else ""))
        lines.append("| " + " | ".join(cols) + " |")
    return head + "\n".join(lines)


def baselines(result: dict) -> str:
    lines = [
        "| in process, no HTTP | short texts/s | short tokens/s | long texts/s | long tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, name in (
        ("engine_inprocess", "vLLM AsyncLLM, token ids, all at once (vLLM's thread binding)"),
        ("st_inprocess", "sentence-transformers encode, batch 64 (512 on a GPU)"),
    ):
        r = result.get(key) or {}
        if "failed" in r or not r:
            lines.append(f"| {name} | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | "
            + " | ".join(
                _fmt(r.get(n, {}).get(k))
                for n in ("short", "long")
                for k in ("texts_per_s", "tokens_per_s")
            )
            + " |"
        )
    return "\n".join(lines)


def overhead(result: dict) -> str:
    lines = [
        "| null engine, single short input | req/s | p50 ms | p99 ms | client CPU | server CPU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in (result.get("null_engine") or {}).items():
        lines.append(
            f"| concurrency {key[1:]} | {_fmt(r['requests_per_s'])} | "
            f"{_fmt(r['p50_ms'], 2)} | {_fmt(r['p99_ms'], 2)} | "
            f"{_fmt(r['client_cpu_pct'])}% | {_fmt(r['server_cpu_pct'])}% |"
        )
    return "\n".join(lines)


def rerank_line(result: dict) -> str:
    parts = []
    for key, name in (("gateway_rerank", "gateway /v1/rerank"), ("vllm_rerank", "vllm /rerank")):
        r = result.get(key)
        if r is None:
            continue
        if "skipped" in r:
            parts.append(f"- {name}: skipped ({r['skipped']})")
        else:
            parts.append(
                f"- {name}, query + 32 documents, concurrency 8: "
                f"{_fmt(r['texts_per_s'])} documents/s, p50 {_fmt(r['p50_ms'], 1)} ms, "
                f"p99 {_fmt(r['p99_ms'], 1)} ms"
            )
    return "\n".join(parts)


def targets(result: dict, matrix: list[Cell]) -> list[dict]:
    """The issue's targets, judged on this run (reported, never asserted)."""
    out = []
    table_rows = [r for r in rows(result, matrix) if r["ratio"] is not None]
    if table_rows:
        worst = min(table_rows, key=lambda r: r["ratio"])
        out.append(
            {
                "target": "gateway >= 1.0x vllm serve in every cell",
                "value": f"worst {worst['ratio']:.2f}x ({worst['label']})",
                "met": worst["ratio"] >= 1.0,
            }
        )
        special = [
            r for r in table_rows if r["cell"]["inputs"] == 1 or r["cell"]["length"] == "short"
        ]
        if special:
            w = min(special, key=lambda r: r["ratio"])
            out.append(
                {
                    "target": ">= 1.5x in single-input and short-text cells",
                    "value": f"worst {w['ratio']:.2f}x ({w['label']})",
                    "met": w["ratio"] >= 1.5,
                }
            )
    engine = result.get("engine_inprocess") or {}
    for row in rows(result, matrix):
        cell, g = row["cell"], row["gateway"]
        ceiling = engine.get(cell["length"], {}).get("texts_per_s")
        if cell["inputs"] == 64 and g and ceiling:
            r = g["texts_per_s"] / ceiling
            out.append(
                {
                    "target": f"gateway at 64 inputs/request >= 0.85x in-process engine "
                    f"({row['label']})",
                    "value": f"{r:.2f}x",
                    "met": r >= 0.85,
                }
            )
    null = (result.get("null_engine") or {}).get("c1")
    if null:
        out.append(
            {
                "target": "null-engine overhead <= 1 ms p50 (single input, c=1, "
                "client and HTTP included)",
                "value": f"{null['p50_ms']:.2f} ms",
                "met": null["p50_ms"] <= 1.0,
            }
        )
    micro = result.get("micro") or {}
    if "base64_32x1024_ms" in micro:
        v = micro["base64_32x1024_ms"]
        out.append(
            {
                "target": "base64 encoding of 32x1024 vectors <= 0.5 ms",
                "value": f"{v:.3f} ms",
                "met": v <= 0.5,
            }
        )
    return out


def summary(result: dict, matrix: list[Cell]) -> str:
    """One sentence on the ratio column: its range and every cell where the gateway loses,
    so that prose beside the table need not quote (and go stale on) these figures."""
    compared = [r for r in rows(result, matrix) if r["ratio"] is not None]
    if not compared:
        return "No cell was measured on both servers."
    low = min(compared, key=lambda r: r["ratio"])
    high = max(compared, key=lambda r: r["ratio"])
    losses = [f"{r['label']} ({r['ratio']:.2f}x)" for r in compared if r["ratio"] < 1.0]
    return (
        f"Gateway / vllm serve texts/s: {low['ratio']:.2f}x ({low['label']}) to "
        f"{high['ratio']:.2f}x ({high['label']}) over {len(compared)} cells; below 1.0x in "
        + (", ".join(losses) if losses else "none")
        + "."
    )


def markdown(result: dict, matrix: list[Cell]) -> str:
    m = result["meta"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_start"])
    parts = [
        (
            f"Run {m['date_utc']} UTC (`{m.get('command', 'python -m bench')}`), mode `{m['mode']}` ({m['duration_s']:g} s "
            f"of load per cell), {m['cpus']} x {m['cpu_model']}, vLLM {m['vllm']}, "
            f"torch {m['torch']}, Python {m['python']}, {m['model']} {m['dtype']}; "
            f"load average at start {load}."
        ),
        "",
        summary(result, matrix),
        "",
        table(result, matrix),
        "",
        baselines(result),
        "",
        overhead(result),
        "",
        rerank_line(result),
        "",
        "| target | this run | met |",
        "|---|---|---|",
        *(
            f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
            for t in result.get("targets", [])
        ),
    ]
    return "\n".join(parts) + "\n"


def chart(result: dict, matrix: list[Cell], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no chart")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [length for length in ("short", "long") if any(c.length == length for c in matrix)]
    fig, axes = plt.subplots(1, len(lengths), figsize=(7 * len(lengths), 4.8), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        cells = [c for c in matrix if c.length == length]
        x = range(len(cells))
        for offset, (key, name) in ((-0.2, ("gateway", "gateway")), (0.2, ("vllm", "vllm serve"))):
            values = [(result.get(key) or {}).get(c.label, {}).get("texts_per_s", 0) for c in cells]
            ax.bar([i + offset for i in x], values, width=0.4, label=name)
        for key, name, style in (
            ("engine_inprocess", "in-process engine", "--"),
            ("st_inprocess", "sentence-transformers", ":"),
        ):
            v = (result.get(key) or {}).get(length, {}).get("texts_per_s")
            if v:
                ax.axhline(
                    v,
                    linestyle=style,
                    color="gray" if style == "--" else "black",
                    label=f"{name} ({v:,.0f}/s)",
                )
        ax.set_xticks(list(x))
        ax.set_xticklabels(
            [c.label.removeprefix(length + " ").replace(" ", "\n") for c in cells], fontsize=8
        )
        ax.set_title(f"{length} texts ({result['meta']['model']}, {result['meta']['cpus']} CPUs)")
        ax.set_ylabel("texts/s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, matrix: list[Cell], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["targets"] = targets(result, matrix)
    result["table"] = rows(result, matrix)
    text = markdown(result, matrix)
    print("\n" + text)
    (out / "latest.json").write_text(json.dumps(result, indent=1, default=_json_default))
    (out / "latest.md").write_text(text)
    chart(result, matrix, out / "latest.png")
    print(f"wrote {out / 'latest.json'}, {out / 'latest.md'}, {out / 'latest.png'}")
    if out.resolve() == RESULTS.resolve():
        publish(text)


def saved_matrix(result: dict) -> list[Cell]:
    """The cells of a saved run, in its order (the JSON keeps them in `table`)."""
    return [Cell(**row["cell"]) for row in result["table"]]


def render_saved(out: Path = RESULTS) -> str:
    """The Markdown of the run saved in `out/latest.json`, with today's report code: what
    `make bench` would have written, without rerunning it."""
    result = json.loads((out / "latest.json").read_text())
    matrix = saved_matrix(result)
    result["targets"] = targets(result, matrix)
    return markdown(result, matrix)


def render_only(out: Path = RESULTS) -> None:
    """`python -m bench --render-only`: rewrite latest.md and the docs from latest.json."""
    text = render_saved(out)
    (out / "latest.md").write_text(text)
    print(f"wrote {out / 'latest.md'} from {out / 'latest.json'}")
    if out.resolve() == RESULTS.resolve():
        publish(text)


def publish(text: str) -> None:
    """Put the tables into the docs' generated sections (a run saved elsewhere, e.g. a GPU
    run with --out, leaves the docs alone)."""
    for target in TARGETS:
        changed = write_section(REPO / target, SECTION, text)
        print(f"{'rewrote' if changed else 'unchanged'}: {target} section `{SECTION}`")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)
