"""`make docs` (python -m docgen): --check reports stale sections; a plain run rewrites them."""

from __future__ import annotations

import shutil

import pytest

from docgen import __main__ as docgen
from harness.markers import replace_section
from harness.paths import REPO


def test_check_passes_on_the_repository_as_committed() -> None:
    assert docgen.main(["--check"]) == 0


@pytest.fixture
def copy(tmp_path, monkeypatch):
    for rel in ("README.md", "docs/benchmarks.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    monkeypatch.setattr(docgen, "REPO", tmp_path)
    return tmp_path


def test_check_fails_on_a_hand_edit_and_a_run_repairs_it(copy, capsys) -> None:
    readme = copy / "README.md"
    readme.write_text(replace_section(readme.read_text(), "options", "| hand | edit |"))
    assert docgen.main(["--check"]) == 1
    assert "README.md section `options`" in capsys.readouterr().out
    assert docgen.main([]) == 0
    assert readme.read_text() == (REPO / "README.md").read_text()
