"""The benchmark's tables in README.md and docs/benchmarks.md are exactly what its report code
renders from the saved results, and the summary line names every cell the gateway loses."""

from __future__ import annotations

import pytest

from bench import report
from bench.cells import Cell
from docgen.markers import REPO, section


@pytest.mark.parametrize("target", report.TARGETS)
def test_docs_hold_what_the_saved_run_renders_to(target: str) -> None:
    # A hand edit of the section, or a report change without `python -m bench --render-only`,
    # fails here.
    text = (REPO / target).read_text()
    assert section(text, report.SECTION) == report.render_saved().strip("\n")


def test_saved_markdown_is_what_the_saved_json_renders_to() -> None:
    assert (report.RESULTS / "latest.md").read_text() == report.render_saved()


def _result(ratios: dict[Cell, float]) -> dict:
    return {
        "gateway": {c.label: {"texts_per_s": r * 10} for c, r in ratios.items()},
        "vllm": {c.label: {"texts_per_s": 10.0} for c in ratios},
    }


def test_summary_gives_the_range_and_every_losing_cell() -> None:
    a, b, c = (
        Cell("short", 1, 1, "float"),
        Cell("short", 8, 1, "float"),
        Cell("long", 8, 16, "base64"),
    )
    text = report.summary(_result({a: 0.9, b: 1.5, c: 0.5}), [a, b, c])
    assert text == (
        "Gateway / vllm serve texts/s: 0.50x (long c=8 n=16 base64) to 1.50x "
        "(short c=8 n=1 float) over 3 cells; below 1.0x in short c=1 n=1 float "
        "(0.90x), long c=8 n=16 base64 (0.50x)."
    )


def test_summary_says_none_when_the_gateway_loses_no_cell() -> None:
    a = Cell("short", 1, 1, "float")
    assert report.summary(_result({a: 1.2}), [a]).endswith("below 1.0x in none.")
