"""harness/ is shared by bench/, reliability/, tests/ and docgen/ and imports none of them;
docgen/ is a leaf that nothing imports; the battery's sections do not import the battery."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.paths import REPO

USERS = {"bench", "reliability", "docgen", "tests"}


def imported_modules(path: Path) -> set[str]:
    """The top-level packages a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (REPO / folder).rglob("*.py")]


def test_harness_imports_none_of_its_users() -> None:
    for path in python_files("harness"):
        assert not imported_modules(path) & USERS, path


def test_nothing_imports_docgen() -> None:
    for path in python_files("gateway", "adapters", "harness", "bench", "reliability", "tests"):
        if "docgen" not in path.relative_to(REPO).parts:
            assert "docgen" not in imported_modules(path), path


def test_bench_and_reliability_do_not_import_each_other() -> None:
    for path in python_files("reliability"):
        assert "bench" not in imported_modules(path), path
    for path in python_files("bench"):
        assert "reliability" not in imported_modules(path), path


def test_battery_sections_do_not_import_the_battery() -> None:
    source = (REPO / "reliability" / "hardening.py").read_text()
    assert "reliability.battery" not in source and "import battery" not in source


def test_every_percentile_is_the_harness_one() -> None:
    # Latency percentiles of the benchmark and the battery must be comparable: no second
    # definition, neither numpy's interpolation nor a rank computed by hand.
    for path in python_files("bench", "reliability", "harness"):
        if path == REPO / "harness" / "stats.py":
            continue
        source = path.read_text()
        for other in ("def percentile", "np.percentile", "np.quantile", "* (len(ordered)"):
            assert other not in source, (path, other)
