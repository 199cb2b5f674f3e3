"""The repository's root, for programs that read or write files in it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
