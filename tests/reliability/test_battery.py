"""The battery's table in the docs is exactly what its report code renders from the saved
results."""

from __future__ import annotations

import pytest

from harness.markers import section
from harness.paths import REPO
from reliability import battery


@pytest.mark.parametrize("target", battery.TARGETS)
def test_docs_hold_what_the_saved_run_renders_to(target: str) -> None:
    # A hand edit of the section, or a report change without `--render-only`, fails here.
    text = (REPO / target).read_text()
    assert section(text, battery.SECTION) == battery.render_saved().strip("\n")


def test_saved_markdown_is_what_the_saved_json_renders_to() -> None:
    assert (battery.RESULTS / "latest.md").read_text() == battery.render_saved()


def test_report_states_the_run_and_its_failures() -> None:
    saved = {
        "rows": [["steady", "requests", "3"]],
        "failures": ["steady: 5xx"],
        "cpus": 2,
        "python": "3.11.7",
        "date_utc": "2026-01-02 03:04:05",
        "command": "python -m reliability.battery --only steady",
    }
    assert battery.markdown(saved) == (
        "Run 2026-01-02 03:04:05 UTC (`python -m reliability.battery --only steady`), 2 CPUs, "
        "Python 3.11.7: FAILED: steady: 5xx.\n\n"
        "| section | figure | value |\n|---|---|---|\n| steady | requests | 3 |\n"
    )
