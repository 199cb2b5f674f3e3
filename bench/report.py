"""The tables (stdout and Markdown), the targets, the JSON and the PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.cells import Cell
from harness.markers import write_section
from harness.paths import REPO

RESULTS = REPO / "bench" / "results"
# The generated section `make bench` and `python -m bench --render-only` write in these files.
SECTION = "bench"
TARGETS = ("docs/benchmarks.md",)
# Result key -> column name, in the order the servers run.
SERVERS = {
    "gateway": "gateway",
    "vllm_tuned": "vllm serve tuned",
    "vllm_defaults": "vllm serve defaults",
}
# The cell whose p50 is "a short query's latency" (the latency target below).
LATENCY_CELL = "short c=1 n=1 float"
RERANK_LABEL = "rerank: query + 32 documents, c=8 (documents/s)"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _measured(cell: Any) -> dict | None:
    """A cell's result, or None when it was not measured (skipped server or route)."""
    return cell if isinstance(cell, dict) and "texts_per_s" in cell else None


def _row(label: str, cells: dict[str, dict | None], cell: Cell | None) -> dict:
    rate = {k: (c or {}).get("texts_per_s") for k, c in cells.items()}
    return {
        "cell": cell.to_dict() if cell else None,
        "label": label,
        **cells,
        "ratio_tuned": _ratio(rate["gateway"], rate["vllm_tuned"]),
        "ratio_defaults": _ratio(rate["gateway"], rate["vllm_defaults"]),
    }


def rows(result: dict, matrix: list[Cell]) -> list[dict]:
    """One row per cell: each server's result and the gateway's ratios to the two vllm serve
    columns."""
    return [
        _row(c.label, {k: _measured((result.get(k) or {}).get(c.label)) for k in SERVERS}, c)
        for c in matrix
    ]


def rerank_row(result: dict) -> dict:
    return _row(RERANK_LABEL, {k: _measured(result.get(k + "_rerank")) for k in SERVERS}, None)


def table(result: dict, matrix: list[Cell]) -> str:
    head = ["cell"]
    for name in SERVERS.values():
        head += [f"{name} texts/s", "p50 / p99 ms"]
    head += ["gateway / tuned", "gateway / defaults"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in [*rows(result, matrix), rerank_row(result)]:
        cols = [row["label"]]
        for key in SERVERS:
            r = row[key] or {}
            cols += [
                _fmt(r.get("texts_per_s"), 1),
                f"{_fmt(r.get('p50_ms'), 1)} / {_fmt(r.get('p99_ms'), 1)}" if r else "-",
            ]
        cols += [_times(row["ratio_tuned"]), _times(row["ratio_defaults"])]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _single(result: dict, key: str) -> dict | None:
    r = (result.get(key) or {}).get("single")
    return r if isinstance(r, dict) and "p50_ms" in r else None


def latency(result: dict) -> str:
    lines = ["| one short query at a time | p50 ms | p99 ms |", "|---|---:|---:|"]
    for key, name in SERVERS.items():
        r = _measured((result.get(key) or {}).get(LATENCY_CELL))
        if r:
            lines.append(
                f"| {name}, over HTTP (cell {LATENCY_CELL}) | "
                f"{_fmt(r['p50_ms'], 1)} | {_fmt(r['p99_ms'], 1)} |"
            )
    for key, name in (
        ("engine_inprocess", "vLLM AsyncLLM in process (the gateway's engine and environment)"),
        ("st_inprocess", "sentence-transformers `encode(text)` in process"),
    ):
        r = _single(result, key)
        if r:
            lines.append(
                f"| {name}, {r['queries']} queries | {_fmt(r['p50_ms'], 1)} | "
                f"{_fmt(r['p99_ms'], 1)} |"
            )
    return "\n".join(lines)


def baselines(result: dict) -> str:
    lines = [
        "| in process, no HTTP | short texts/s | short tokens/s | long texts/s | long tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, name in (
        ("engine_inprocess", "vLLM AsyncLLM, token ids, all at once (the gateway's engine)"),
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


def _env(env: dict[str, str]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in env.items()) or "nothing"


def started(result: dict) -> str:
    """How each server was started, from the run's own record."""
    m = result["meta"]
    servers = m.get("servers") or {}
    engine_env = m.get("engine_environment") or {}
    lines = ["How each server was started (MODEL is the model folder; one server at a time):", ""]
    if "gateway" in servers:
        workers = m.get("gateway_workers", 1)
        lines.append(
            f"- **gateway**: `{servers['gateway']['command']}` ("
            + ("one process" if workers == 1 else f"{workers} worker processes, one engine each")
            + f"); it gives its engine {_env(engine_env)} itself "
            "(`adapters.vllm.engine_environment`)."
        )
    if "vllm_tuned" in servers:
        s = servers["vllm_tuned"]
        lines.append(
            f"- **vllm serve tuned**: `{s['command']}` with {_env(s['env'])} in its "
            "environment: the flags are `adapters.vllm.engine_arguments` of the "
            "gateway's own model settings and the environment is `engine_environment` of its "
            "`--cpu-threads`, the functions the gateway builds its engine with; the log flags "
            "match the gateway's `--log-level warning`."
        )
    if "vllm_defaults" in servers:
        s = servers["vllm_defaults"]
        unset = ", ".join(f"`{k}`" for k in s["unset"]) or "nothing"
        lines.append(
            f"- **vllm serve defaults**: `{s['command']}`, with {unset} removed from its "
            "environment: vLLM's defaults except the dtype (vLLM's `auto` runs a float32 "
            "pooling model in float16; the reference vectors are float32) and the memory "
            "share (vLLM's default 0.92 is, on a CPU, a share of host memory for its cache), "
            "and the name clients call."
        )
    return "\n".join(lines)


def _rated(rows_: list[dict]) -> list[dict]:
    return [r for r in rows_ if r["ratio_tuned"] is not None]


def _worst(rows_: list[dict], floor: float, target: str) -> dict:
    if not rows_:
        return {"target": target, "value": "not measured", "met": False}
    worst = min(rows_, key=lambda r: r["ratio_tuned"])
    return {
        "target": target,
        "value": f"worst {worst['ratio_tuned']:.2f}x ({worst['label']})",
        "met": worst["ratio_tuned"] >= floor,
    }


def targets(result: dict, matrix: list[Cell]) -> list[dict]:
    """The targets, judged on this run (reported, never asserted): the gateway against vLLM's
    server and against the engine in process first, then the gateway's own overheads."""
    out = []
    cells = _rated(rows(result, matrix))
    reranked = _rated([rerank_row(result)])
    if cells:
        out.append(
            _worst(
                cells + reranked,
                1.0,
                "gateway >= 1.0x vllm serve tuned in every cell, rerank included",
            )
        )
        busy = [r for r in cells if r["cell"]["inputs"] == 1 and r["cell"]["concurrency"] >= 8]
        out.append(
            _worst(
                busy + reranked,
                1.3,
                "gateway >= 1.3x vllm serve tuned in the single-input cells at c >= 8 "
                "and in rerank",
            )
        )
    gateway = _measured((result.get("gateway") or {}).get(LATENCY_CELL))
    st = _single(result, "st_inprocess")
    if gateway and st:
        out.append(
            {
                "target": f"gateway p50 of one short query at c=1 ({LATENCY_CELL}) <= "
                "sentence-transformers in process, one query at a time",
                "value": f"{gateway['p50_ms']:.1f} ms vs {st['p50_ms']:.1f} ms",
                "met": gateway["p50_ms"] <= st["p50_ms"],
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
    """One sentence on the gateway / tuned column: its range and every cell where the
    gateway loses, so that prose beside the table need not quote (and go stale on) these
    figures."""
    compared = _rated([*rows(result, matrix), rerank_row(result)])
    if not compared:
        return "No cell was measured on both the gateway and the tuned vllm serve."
    low = min(compared, key=lambda r: r["ratio_tuned"])
    high = max(compared, key=lambda r: r["ratio_tuned"])
    losses = [f"{r['label']} ({r['ratio_tuned']:.2f}x)" for r in compared if r["ratio_tuned"] < 1]
    return (
        f"Gateway / vllm serve tuned: {low['ratio_tuned']:.2f}x ({low['label']}) to "
        f"{high['ratio_tuned']:.2f}x ({high['label']}) over {len(compared)} cells; below 1.0x "
        "in " + (", ".join(losses) if losses else "none") + "."
    )


def heading(result: dict) -> str:
    m = result["meta"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_start"])
    end = m.get("loadavg_end")
    took = f", took {m['wall_s'] / 60:.1f} minutes" if "wall_s" in m else ""
    return (
        f"Run {m['date_utc']} UTC (`{m.get('command', 'python -m bench')}`{took}), mode "
        f"`{m['mode']}` ({m['duration_s']:g} s of load per cell), {m['cpus']} x "
        f"{m['cpu_model']}, vLLM {m['vllm']}, torch {m['torch']}, Python {m['python']}, "
        f"{m['model']} {m['dtype']}; load average at start {load}"
        + (f", at end {', '.join(f'{x:.2f}' for x in end)}" if end else "")
        + "."
    )


def markdown(result: dict, matrix: list[Cell]) -> str:
    parts = [
        heading(result),
        "",
        started(result),
        "",
        summary(result, matrix),
        "",
        table(result, matrix),
        "",
        latency(result),
        "",
        baselines(result),
        "",
        overhead(result),
        "",
        "| target | this run | met |",
        "|---|---|---|",
        *(
            f"| {t['target']} | {t['value']} | {'met' if t['met'] else '**NOT met**'} |"
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
    width = 0.8 / len(SERVERS)
    for ax, length in zip(axes[0], lengths):
        cells = [c for c in matrix if c.length == length]
        x = range(len(cells))
        for i, (key, name) in enumerate(SERVERS.items()):
            values = [
                ((result.get(key) or {}).get(c.label) or {}).get("texts_per_s", 0) for c in cells
            ]
            offset = (i - (len(SERVERS) - 1) / 2) * width
            ax.bar([j + offset for j in x], values, width=width, label=name)
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
