"""How the bench starts vLLM's server: tuned, it gets exactly the engine and the engine
environment the gateway builds from the same flags (parsed back by vLLM's own `serve` parser);
with defaults, none of them."""

from __future__ import annotations

import argparse
import sys

import pytest

from adapters.vllm import engine_arguments, engine_environment
from bench.servers import (
    VLLM_SERVE,
    gateway_launch,
    gateway_settings,
    vllm_defaults_launch,
    vllm_tuned_launch,
)
from gateway.config import resolve_model_path

BIND = "VLLM_CPU_OMP_THREADS_BIND"


@pytest.fixture(scope="module")
def serve_parser() -> argparse.ArgumentParser:
    """`vllm serve`'s own argument parser (importing vLLM's CLI takes seconds)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def serve_engine_args(parser: argparse.ArgumentParser, command: list[str]) -> object:
    """The `AsyncEngineArgs` vLLM's server builds from `command`."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    assert command[: len(VLLM_SERVE)] == VLLM_SERVE
    return AsyncEngineArgs.from_cli_args(parser.parse_args(command[len(VLLM_SERVE) :]))


@pytest.fixture
def model_folder() -> str:
    # A real folder: vLLM's parser takes anything else for a hub id and checks its form.
    return resolve_model_path("builtin:all-MiniLM-L6-v2")


# Every engine option the gateway passes on, away from its defaults, so that a command that
# hard-codes (or drops) one of them fails.
FLAGS = [
    "--served-model-name",
    "mini",
    "--dtype",
    "float32",
    "--max-model-len",
    "128",
    "--max-num-batched-tokens",
    "4096",
    "--max-num-seqs",
    "64",
    "--gpu-memory-utilization",
    "0.3",
    "--trust-remote-code",
    "true",
    "--hf-overrides",
    '{"num_labels": 1}',
    "--cpu-threads",
    "0",
]


@pytest.mark.process
def test_tuned_vllm_serve_gets_the_gateways_engine_arguments(
    serve_parser: argparse.ArgumentParser, model_folder: str
) -> None:
    settings = gateway_settings(["--model", model_folder, *FLAGS])
    launch = vllm_tuned_launch(8123, settings, on_cpu=True)
    parsed = serve_engine_args(serve_parser, launch.command)
    expected = engine_arguments(settings.models[0].engine, on_cpu=True)
    assert expected["max_num_batched_tokens"] == 4096  # the flags above reached the spec
    for name, value in expected.items():
        if name == "served_model_name":
            value = [value]
        assert getattr(parsed, name) == value, name


@pytest.mark.process
def test_tuned_vllm_serve_gets_the_gateways_engine_environment(model_folder: str) -> None:
    settings = gateway_settings(["--model", model_folder, *FLAGS])
    launch = vllm_tuned_launch(8123, settings, on_cpu=True)
    assert launch.env == engine_environment("0")
    env = launch.environment({BIND: "auto", "PATH": "/bin"})
    assert env[BIND] == "0"
    assert env["PATH"] == "/bin"


@pytest.mark.process
def test_tuned_vllm_serve_follows_an_operators_binding(
    model_folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway takes VLLM_CPU_OMP_THREADS_BIND from its environment when --cpu-threads is
    # not given; the tuned server must get the same.
    monkeypatch.setenv(BIND, "1")
    settings = gateway_settings(["--model", model_folder])
    assert vllm_tuned_launch(8123, settings, on_cpu=True).env[BIND] == "1"


@pytest.mark.process
def test_defaults_vllm_serve_gets_vllms_own_limits_and_no_engine_environment(
    serve_parser: argparse.ArgumentParser, model_folder: str
) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs

    settings = gateway_settings(["--model", model_folder, *FLAGS])
    launch = vllm_defaults_launch(
        8124,
        model_folder,
        "mini",
        dtype="float32",
        memory_share=0.2,
        drop=engine_environment(settings.cpu_threads),
    )
    parsed = serve_engine_args(serve_parser, launch.command)
    vllm_default = AsyncEngineArgs(model=model_folder)
    for name in ("max_num_batched_tokens", "max_num_seqs", "max_model_len", "runner"):
        assert getattr(parsed, name) == getattr(vllm_default, name), name
    assert (parsed.model, parsed.dtype, parsed.gpu_memory_utilization) == (
        model_folder,
        "float32",
        0.2,
    )
    assert launch.env == {}
    assert BIND not in launch.environment({BIND: "0-1", "PATH": "/bin"})


def test_commands_are_shown_as_a_user_types_them(model_folder: str) -> None:
    launch = vllm_defaults_launch(
        8124, model_folder, "mini", dtype="float32", memory_share=0.2, drop=()
    )
    assert launch.shown(model_folder) == (
        "python -m vllm.entrypoints.launchers.api_server.entry --model MODEL "
        "--served-model-name mini --dtype float32 --gpu-memory-utilization 0.2"
    )
    gateway = gateway_launch(8125, extra=["--model", model_folder])
    assert gateway.command[0] == sys.executable
    assert gateway.shown(model_folder) == (
        "python -m gateway serve --engine vllm --log-level warning --model MODEL"
    )
