"""`make docs` / `python -m docgen [--check]`: rewrite every generated section of the docs.

options      docs/configuration.md   from the configuration's OPTIONS
bench        docs/benchmarks.md      from bench/results/latest.json
reliability  docs/reliability.md     from reliability/results/latest.json
costs        docs/reliability.md     from reliability/results/costs.json
ablation     docs/benchmarks.md      from bench/results/ablation.json
profile      docs/benchmarks.md      from bench/results/profile.json
outputs      docs/benchmarks.md      from bench/results/outputs.json

Nothing is measured: the benchmark and the battery write their sections themselves when they
run; here their saved results are only rendered again. --check writes nothing and exits 1
when a section differs from what would be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import ablation, outputs, profile, report
from docgen import options
from harness.markers import replace_section, section
from harness.paths import REPO
from reliability import battery, costly_requests


def generators() -> list[tuple[str, tuple[str, ...], Callable[[], str]]]:
    return [
        (options.SECTION, options.TARGETS, options.render),
        (report.SECTION, report.TARGETS, report.render_saved),
        (battery.SECTION, battery.TARGETS, battery.render_saved),
        (costly_requests.SECTION, costly_requests.TARGETS, costly_requests.render_saved),
        (ablation.SECTION, ablation.TARGETS, ablation.render_saved),
        (profile.SECTION, profile.TARGETS, profile.render_saved),
        (outputs.SECTION, outputs.TARGETS, outputs.render_saved),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m docgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any section is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, targets, render in generators():
        body = render()
        for target in targets:
            path = REPO / target
            text = path.read_text()
            if section(text, name) == body.strip("\n"):
                continue
            stale.append(f"{target} section `{name}`")
            if not args.check:
                path.write_text(replace_section(text, name, body))
    verb = "stale" if args.check else "rewrote"
    print("\n".join(f"{verb}: {s}" for s in stale) or "every generated section is current")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
