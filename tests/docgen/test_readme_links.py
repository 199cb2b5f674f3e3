"""The README's links are relative paths into the repository that exist, and each `#anchor`
names a heading of the page it points to (mkdocs build --strict checks the same inside docs/)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from harness.paths import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    # Python-Markdown's toc slugify, which MkDocs uses, over the heading's text (code spans
    # and emphasis marks dropped, as in the rendered heading).
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE)}


def test_slug_matches_mkdocs_for_code_and_punctuation() -> None:
    assert slug("`--workers`: gateway processes in one pod") == (
        "-workers-gateway-processes-in-one-pod"
    )
    assert slug("Running it on a GPU host: `bench/gpu.sh`") == "running-it-on-a-gpu-host-benchgpush"


def test_readme_links_are_relative_and_resolve() -> None:
    links = LINK.findall((REPO / "README.md").read_text())
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        assert not path.startswith("/"), link
        target = (REPO / path).resolve()
        assert target.is_relative_to(REPO) and target.exists(), link
        if anchor:
            assert anchor in anchors(target), link
