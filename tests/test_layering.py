"""Imports point one way. Every module under gateway/ and adapters/ sits on a floor and imports
only modules of its own floor or lower ones:

    cli (and bulk/) -> app, workers, engines, metrics -> api (and batches/) -> serving
    -> http, tenancy, state, config, errors -> adapters.base <- adapters.fake, adapters.vllm

The serving layer never imports Starlette; adapters never import the gateway, Starlette or
uvicorn; the gateway imports no concrete adapter (`gateway.engines` loads one by name); only
the vLLM adapter imports vllm; and the gateway's runtime import graph has no cycle. Imports under `if TYPE_CHECKING:` are types
only and do not count; imports inside functions do.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "adapters")

# Highest floor first; a module's floor is that of the longest prefix that names it. Modules
# placed nowhere else (gateway/__init__, a new top-level module) sit on the http floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("gateway.cli", "gateway.__main__", "gateway.bulk"),
    ("gateway.app", "gateway.workers", "gateway.engines", "gateway.metrics"),
    ("gateway.api", "gateway.batches"),
    ("gateway.serving",),
    (
        "gateway",
        "gateway.http",
        "gateway.tenancy",
        "gateway.state",
        "gateway.config",
        "gateway.errors",
        "gateway.hardware",
    ),
    ("adapters.fake", "adapters.vllm"),
    ("adapters.base", "adapters.token_limits", "adapters"),
)
# The vLLM adapter package: the only importer of vllm.
VLLM_ADAPTER = ("adapters.vllm",)
CONCRETE_ADAPTERS = ("adapters.fake", *VLLM_ADAPTER)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _runtime_imports_of(child))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _runtime_imports(node)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module `name` imports at runtime: a submodule when `from package import x`
    names one, else the module the statement names."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package, up level - 1
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in known else base)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def floor(name: str) -> int:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (level, prefix)
    assert best is not None, f"{name} sits on no floor: place it in FLOORS"
    return best[0]


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def test_every_import_points_to_the_same_floor_or_down() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if ours(target) and floor(target) < floor(module)
    ]
    assert upward == []


def test_the_gateway_import_graph_has_no_cycle() -> None:
    edges = {
        module: {t for t in targets if t.startswith("gateway")}
        for module, targets in graph().items()
        if module.startswith("gateway")
    }
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_adapters_do_not_import_the_http_layer() -> None:
    for module, targets in graph().items():
        if module.startswith("adapters"):
            roots = {t.split(".")[0] for t in targets}
            assert not roots & {"gateway", "starlette", "uvicorn"}, module


def test_the_gateway_names_no_concrete_adapter() -> None:
    for module, targets in graph().items():
        if module.startswith("gateway"):
            named = {t for t in targets if t.startswith(CONCRETE_ADAPTERS)}
            assert not named, f"{module} imports {named}"


def test_only_the_vllm_adapter_imports_vllm() -> None:
    importers = {
        module
        for module, targets in graph().items()
        if any(t == "vllm" or t.startswith("vllm.") for t in targets)
    }
    assert all(m.startswith(VLLM_ADAPTER) for m in importers), importers


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_find_cycle_finds_a_cycle_and_only_a_cycle(edges, cycle) -> None:
    assert find_cycle(edges) == cycle


def test_the_serving_layer_knows_no_starlette() -> None:
    # Jobs take plain values, so that every dialect, batch lines and bulk/ can call them.
    for module, targets in graph().items():
        if module.startswith("gateway.serving"):
            assert not {t for t in targets if t.split(".")[0] == "starlette"}, module
