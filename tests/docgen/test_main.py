"""`make docs` (python -m docgen): --check reports stale sections; a plain run rewrites them."""

from __future__ import annotations

import shutil

import pytest

from docgen import __main__ as docgen
from docgen import options
from harness.markers import replace_section, section
from harness.paths import REPO


def test_check_passes_on_the_repository_as_committed() -> None:
    assert docgen.main(["--check"]) == 0


def test_every_generated_section_appears_once_in_the_docs() -> None:
    # One place per table: a section rendered into two files would be read twice and could be
    # quoted from either; the README keeps none.
    for name, targets, _ in docgen.generators():
        assert len(targets) == 1, name
        assert targets[0].startswith("docs/"), name
        assert section((REPO / targets[0]).read_text(), name)
    assert "<!-- generated:" not in (REPO / "README.md").read_text()


@pytest.fixture
def copy(tmp_path, monkeypatch):
    targets = {t for _, ts, _ in docgen.generators() for t in ts}
    for rel in targets:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    monkeypatch.setattr(docgen, "REPO", tmp_path)
    return tmp_path


def test_check_fails_on_a_hand_edit_and_a_run_repairs_it(copy, capsys) -> None:
    (target,) = options.TARGETS
    page = copy / target
    page.write_text(replace_section(page.read_text(), "options", "| hand | edit |"))
    assert docgen.main(["--check"]) == 1
    assert f"{target} section `options`" in capsys.readouterr().out
    assert docgen.main([]) == 0
    assert page.read_text() == (REPO / target).read_text()
