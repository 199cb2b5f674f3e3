"""Engines by name: the adapter behind `--engine`, the registry of served models built on it,
and the process setup the engine needs. Used by `serve` (gateway.cli) and `embed`
(gateway.bulk.command).

An adapter is named by an import string, as uvicorn names an app: the gateway depends on
`adapters.base` alone, and imports the one adapter in use when it builds an engine, so that
the fake engine works without vLLM installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from adapters.base import Engine, EngineSpec
from gateway.config import Settings
from gateway.serving.cache import CachingEngine, EmbeddingCache
from gateway.serving.registry import ModelRegistry, RestartPolicy, ServedModel

# `--engine` -> the adapter package that implements it.
ADAPTERS = {"fake": "adapters.fake", "vllm": "adapters.vllm"}


def adapter(kind: str, name: str) -> Any:
    """`name` from the adapter package of engine `kind` (imported on first use)."""
    return getattr(importlib.import_module(ADAPTERS[kind]), name)


def make_engine(kind: str, spec: EngineSpec) -> Engine:
    if kind == "fake":
        # engine_kwargs carry the fake's switches (latency_s, control_file, stats_file, ...).
        options = {
            "dimension": 384,
            "max_model_len": 512,
            "scores_pairs": spec.rerank_kind in ("cross_encoder", "llm"),
            **({"outputs": spec.outputs} if spec.outputs else {}),
            **spec.engine_kwargs,
        }
        engine: Engine = adapter(kind, "FakeEngine")(spec, **options)
        return engine
    engine = adapter(kind, "VLLMEngine")(spec)
    return engine


def build_registry(settings: Settings) -> ModelRegistry:
    def engine(spec: EngineSpec) -> Engine:
        cache = (
            EmbeddingCache(settings.embedding_cache_size, settings.embedding_cache_bytes)
            if settings.embedding_cache_size
            else None
        )
        return CachingEngine(make_engine(settings.engine, spec), cache)

    return ModelRegistry(
        [
            ServedModel(m.name, m.aliases, engine(m.engine), m.policy, default=m.default)
            for m in settings.models
        ],
        RestartPolicy(
            attempts=settings.engine_restart_attempts, backoff_s=settings.engine_restart_backoff_s
        ),
    )


def prepare_process(settings: Settings) -> str | None:
    """Bind the engine's CPU threads before it starts (vLLM); the cores bound, or None for an
    engine that needs no process setup."""
    if settings.engine != "vllm":
        return None
    cores: str = adapter("vllm", "configure_cpu_threads")(settings.cpu_threads)
    return cores


def engine_preload(settings: Settings) -> str | None:
    """The LD_PRELOAD the engine runs best with (vLLM: tcmalloc, Intel OpenMP), if any."""
    if settings.engine != "vllm":
        return None
    preload: str | None = adapter("vllm", "engine_environment")(settings.cpu_threads).get(
        "LD_PRELOAD"
    )
    return preload
