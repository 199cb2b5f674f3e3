"""Command line: argv -> Settings -> engines -> uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from gateway import shm
from gateway.app import create_app
from gateway.bulk import command as bulk_command
from gateway.config import ConfigError, Settings, add_arguments, load_settings
from gateway.engines import build_registry, engine_preload, prepare_process
from gateway.http.connections import ConnectionLimits, default_max_connections, protocol_class
from gateway.http.drain import DrainingServer
from gateway.http.logs import configure as configure_logging
from gateway.http.security import exposure_warning
from gateway.metrics import prepare_multiprocess

log = logging.getLogger("gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedding-gateway",
        description="Local OpenAI-compatible embeddings and Cohere/Jina-compatible rerank "
        "server on in-process vLLM engines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the configured models over HTTP",
        description="Serve models over HTTP. Every option also reads the environment variable "
        "named in brackets; command-line flags win over the environment, which wins over the "
        "YAML file. With no configuration the built-in all-MiniLM-L6-v2 is served.",
    )
    add_arguments(serve)
    embed = commands.add_parser(
        "embed", help="embed a file of documents with the in-process engine (no server)"
    )
    bulk_command.add_arguments(embed)
    return parser


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format, vllm=settings.engine == "vllm")


def preload_and_reexec(settings: Settings) -> None:
    """Run this process itself with the engines' LD_PRELOAD (tcmalloc, Intel OpenMP; see
    gateway.engines.engine_preload): a preload only takes effect when a process
    starts, so the serving process re-executes itself once, with the same arguments and PID.
    Measured on 2 cores: a short query at c=1 took 8.6 ms without, 7.4 ms with."""
    preload = engine_preload(settings)
    if not preload or preload == os.environ.get("LD_PRELOAD"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "gateway", *sys.argv[1:]],
        {**os.environ, "LD_PRELOAD": preload},
    )


def serve(settings: Settings) -> int:
    """Serve in this process, or in `settings.workers` worker processes on the one port."""
    _configure_logging(settings)
    log.info("effective configuration: %s", json.dumps(settings.redacted(), default=str))
    warning = exposure_warning(settings.host, [*settings.api_keys, settings.api_key_file or ""])
    if warning:
        log.warning(warning)
    if settings.engine == "vllm":
        problem = shm.shortage(len(settings.models) * settings.workers)
        if problem:
            log.error(problem)
            return 1
    cores = prepare_process(settings)
    if cores is not None:
        log.info("vLLM CPU model threads bound to cores %s", cores)
    # Before any worker starts: they inherit the folder their metrics go to.
    cleanup_metrics = prepare_multiprocess(settings.workers)
    try:
        if settings.workers > 1:
            from gateway.workers import run_workers

            return run_workers(settings, serve_one)
        return serve_one(settings)
    finally:
        cleanup_metrics()


def serve_one(settings: Settings, sock: Any = None, serve_when_ready: bool = False) -> int:
    """One server process with its own engines; `sock` is a pre-bound socket (a worker's).
    With `serve_when_ready`, the server starts accepting only once its engines have loaded
    (a replacement worker, whose `sock` is bound but not yet listening)."""
    _configure_logging(settings)
    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        log.error("an engine could not be started; shutting down")
        server.should_exit = True

    registry = build_registry(settings)
    if sock is not None:
        # A worker whose model is down for good exits; its supervisor starts a fresh one.
        registry.on_give_up = on_fatal
    app = create_app(
        registry,
        settings,
        on_fatal=on_fatal,
        freeze_heap=True,
        serve_when_ready=serve_when_ready,
    )
    server = DrainingServer(
        uvicorn.Config(
            # The gateway's own log line per request replaces uvicorn's access log; uvicorn's
            # other lines go through the gateway's handler (log_config=None).
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=1,
            http=protocol_class(
                ConnectionLimits(
                    max_header_bytes=settings.max_header_bytes,
                    header_timeout_s=settings.header_timeout_s,
                    body_timeout_s=settings.body_timeout_s,
                    max_connections=settings.max_connections or default_max_connections(),
                )
            ),
            # uvicorn annotates an int but hands the value to loop.call_later, so a fraction works.
            timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        ),
        app.state.gateway["drain"],
        settings.drain_grace_s,
    )
    server.run(sockets=[sock] if sock is not None else None)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "embed":
        return bulk_command.main(args)
    try:
        settings = load_settings(vars(args))
    except ConfigError as exc:
        print(f"embedding-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if argv is None:  # the real command line, which a re-execution can repeat
        preload_and_reexec(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
