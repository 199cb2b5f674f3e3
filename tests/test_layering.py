"""adapters/ never imports gateway/ or starlette; only the adapters/vllm/ package imports vllm."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_adapters_do_not_import_the_http_layer() -> None:
    for path in (ROOT / "adapters").glob("**/*.py"):
        assert not imported_modules(path) & {"gateway", "starlette", "uvicorn"}, path


def test_only_the_vllm_adapter_imports_vllm() -> None:
    importers = {
        p.relative_to(ROOT).as_posix()
        for p in [*ROOT.glob("gateway/*.py"), *ROOT.glob("adapters/**/*.py")]
        if "vllm" in imported_modules(p)
    }
    assert all(importer.startswith("adapters/vllm/") for importer in importers), importers
