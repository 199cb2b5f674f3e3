"""Reading the deployment files as the tools that use them do: the Makefile's variables, the
kustomize overlays rendered by the pinned kubectl (`make install` puts it in the venv), and the
gateway's own CLI for the container arguments."""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from gateway.cli import build_parser
from gateway.config import add_arguments

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu", "fleet")


@functools.cache
def makefile_variables() -> dict[str, str]:
    """`NAME := value` (or `=`, `?=`) assignments of the Makefile, as make reads them."""
    pattern = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|\?=|=)\s*(.*?)\s*$")
    return {
        m[1]: m[2]
        for line in (ROOT / "Makefile").read_text().splitlines()
        if (m := pattern.match(line))
    }


def pins(variable: str) -> dict[str, str]:
    """A Makefile variable holding `name==version` requirements, as {name: version}."""
    return dict(token.split("==", 1) for token in makefile_variables()[variable].split())


def deploy_tool_pins() -> dict[str, str]:
    """pyproject.toml's `deploy` extra (what `make install` installs for these tests)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return dict(requirement.split("==", 1) for requirement in extras["deploy"])


def venv_tool(name: str) -> Path:
    """A command installed by `make install` into this interpreter's environment: never one
    found on PATH by chance (this machine's own kubectl belongs to something else)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} is missing: `make install` installs pyproject's [deploy] extra"
    return path


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects of one overlay, as `kubectl apply -k` would send them."""
    result = subprocess.run(
        [str(venv_tool("kubectl")), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def gateway_container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def serve_args(flags: list[str]) -> dict[str, Any]:
    """`embedding-gateway serve FLAGS` as the CLI parses them. Each flag must also be spelled in
    full: argparse would take `--drain-grace` for `--drain-grace-s`, a rename would not."""
    exact = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    add_arguments(exact)
    try:
        exact.parse_args(flags)
        return vars(build_parser().parse_args(["serve", *flags]))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise AssertionError(f"embedding-gateway serve rejects {flags}") from exc
