"""Replace the text between a pair of markers in a Markdown file.

A generated section looks like this in the file:

    <!-- generated:bench begin -->
    ...written by a command; a hand edit here is overwritten (and fails the tests)...
    <!-- generated:bench end -->

The markers are HTML comments, so Markdown renderers show nothing of them.
"""

from __future__ import annotations

from pathlib import Path


class MarkerError(ValueError):
    """The file does not hold exactly one well-ordered marker pair for the section."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name} begin -->", f"<!-- generated:{name} end -->"


def _bounds(text: str, name: str) -> tuple[int, int]:
    begin, end = markers(name)
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            # Refusing, rather than appending a section, keeps a generated block from landing
            # somewhere nobody chose; a duplicate pair would be ambiguous.
            raise MarkerError(f"expected one `{marker}`, found {count}")
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise MarkerError(f"`{end}` comes before `{begin}`")
    return start, stop


def section(text: str, name: str) -> str:
    """The current body of section `name`, without the marker lines."""
    start, stop = _bounds(text, name)
    return text[start:stop].strip("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the body of section `name` replaced by `body`; nothing else changes."""
    start, stop = _bounds(text, name)
    return text[:start] + "\n" + body.strip("\n") + "\n" + text[stop:]


def write_section(path: Path, name: str, body: str) -> bool:
    """Rewrite section `name` of the file at `path`; True when the file changed."""
    old = path.read_text()
    new = replace_section(old, name, body)
    if new != old:
        path.write_text(new)
    return new != old
