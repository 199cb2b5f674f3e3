"""Command line: argv -> Settings -> engines -> uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from types import FrameType
from typing import Any, Sequence

import uvicorn

from adapters.base import Engine, EngineSpec
from gateway.app import create_app
from gateway.bulk import command as bulk_command
from gateway.cache import CachingEngine, EmbeddingCache
from gateway.config import ConfigError, Settings, add_arguments, load_settings
from gateway.observe import Drain
from gateway.registry import ModelRegistry, ServedModel

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
        "embed", help="embed a file of documents with the in-process engine (no server)")
    bulk_command.add_arguments(embed)
    return parser


def make_engine(kind: str, spec: EngineSpec) -> Engine:
    if kind == "fake":
        from adapters.fake import FakeEngine

        # engine_kwargs carry the fake's switches (latency_s, control_file, stats_file, ...).
        options = {"dimension": 384, "max_model_len": 512,
                   "scores_pairs": spec.rerank_kind in ("cross_encoder", "llm"),
                   **spec.engine_kwargs}
        return FakeEngine(spec, **options)
    from adapters.vllm_engine import VLLMEngine

    return VLLMEngine(spec)


def build_registry(settings: Settings) -> ModelRegistry:
    def engine(spec: EngineSpec) -> Engine:
        cache = (EmbeddingCache(settings.embedding_cache_size)
                 if settings.embedding_cache_size else None)
        return CachingEngine(make_engine(settings.engine, spec), cache)

    return ModelRegistry([ServedModel(m.name, m.aliases, engine(m.engine), m.policy)
                          for m in settings.models])


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings) -> int:
    """Serve in this process, or in `settings.workers` worker processes on the one port."""
    _configure_logging(settings)
    log.info("effective configuration: %s", json.dumps(settings.redacted(), default=str))
    if settings.engine == "vllm":
        from adapters.vllm_engine import configure_cpu_threads

        log.info("vLLM CPU model threads bound to cores %s",
                 configure_cpu_threads(settings.cpu_threads))
    if settings.workers > 1:
        from gateway.workers import run_workers

        return run_workers(settings, serve_one)
    return serve_one(settings)


def serve_one(settings: Settings, sock: Any = None) -> int:
    """One server process with its own engines; `sock` is a pre-bound listening socket."""
    _configure_logging(settings)
    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        log.error("an engine failed to load; shutting down")
        server.should_exit = True

    app = create_app(build_registry(settings), settings, on_fatal=on_fatal)
    server = DrainingServer(uvicorn.Config(
        # The gateway's own log line per request replaces uvicorn's access log.
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        lifespan="on", access_log=False, timeout_graceful_shutdown=1,
    ), app.state.drain, settings.drain_grace_s)
    server.run(sockets=[sock] if sock is not None else None)
    return 1 if failed else 0


class DrainingServer(uvicorn.Server):
    """uvicorn, with a graceful drain on SIGTERM or SIGINT: /ready turns 503 and new requests
    are refused with 503 while the listener stays open (so load balancers see the 503s rather
    than connection errors); the server exits 0 once in-flight requests have finished or
    `grace_s` has passed. A second signal stops it at once."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling super(): uvicorn would re-raise the signal after shutdown, and the
        # process would end by SIGTERM instead of exiting 0.
        if self.drain.draining:
            self.should_exit = True
            return
        log.info("signal %d: draining (%d requests in flight, grace %g s)",
                 sig, self.drain.inflight, self.grace_s)
        self.drain.begin()

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain
        if drain.draining and not self.should_exit:
            waited = time.monotonic() - (drain.started_at or 0.0)
            if waited >= self.grace_s and not drain.expired.is_set():
                # Requests still waiting on an engine answer 503 now, rather than being cut.
                log.warning("drain grace of %g s is over: aborting %d requests",
                            self.grace_s, drain.inflight)
                drain.expired.set()
            if drain.inflight == 0 or waited >= self.grace_s + 1:
                log.info("drained after %.2f s (%d requests still in flight)",
                         waited, drain.inflight)
                self.should_exit = True
        return await super().on_tick(counter)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "embed":
        return bulk_command.main(args)
    try:
        settings = load_settings(vars(args))
    except ConfigError as exc:
        print(f"embedding-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
