"""The one helper that rewrites a generated section: only between its markers, or not at all."""

from __future__ import annotations

import pytest

from harness.markers import MarkerError, markers, replace_section, section, write_section

BEGIN, END = markers("t")
DOC = f"# Title\n\nhand prose\n\n{BEGIN}\nold | table\n{END}\n\nmore hand prose\n"


def test_replaces_only_the_text_between_the_markers() -> None:
    new = replace_section(DOC, "t", "new table\n")
    assert new == f"# Title\n\nhand prose\n\n{BEGIN}\nnew table\n{END}\n\nmore hand prose\n"


def test_replacing_with_the_current_body_changes_nothing() -> None:
    assert replace_section(DOC, "t", section(DOC, "t")) == DOC


def test_other_sections_are_left_alone() -> None:
    b2, e2 = markers("other")
    doc = DOC + f"{b2}\nkeep\n{e2}\n"
    new = replace_section(doc, "t", "x")
    assert section(new, "other") == "keep" and section(new, "t") == "x"


@pytest.mark.parametrize(
    "doc",
    [
        "no markers at all\n",
        f"{BEGIN}\nonly the begin marker\n",
        f"only the end marker\n{END}\n",
        f"{END}\nreversed\n{BEGIN}\n",
        f"{BEGIN}\na\n{END}\n{BEGIN}\nb\n{END}\n",
    ],
)
def test_refuses_when_the_markers_are_missing_duplicated_or_reversed(doc: str) -> None:
    with pytest.raises(MarkerError):
        replace_section(doc, "t", "x")


def test_write_section_rewrites_the_file_and_says_whether_it_changed(tmp_path) -> None:
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    assert write_section(path, "t", "new") is True
    assert section(path.read_text(), "t") == "new"
    assert write_section(path, "t", "new") is False


def test_write_section_leaves_a_file_without_markers_untouched(tmp_path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("no markers\n")
    with pytest.raises(MarkerError):
        write_section(path, "t", "x")
    assert path.read_text() == "no markers\n"
