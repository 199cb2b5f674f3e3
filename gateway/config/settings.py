"""The effective configuration: Settings for the process, a ModelConfig per served model, and
each model's InputPolicy. Field defaults are the options' built-in defaults (options.py), so
a Settings built directly, as tests and benchmarks do, matches one loaded with nothing set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.base import EngineSpec, redact_secrets
from gateway.config.options import default_of


@dataclass(frozen=True)
class InputPolicy:
    """How the gateway turns a model's request inputs into prompts: token-id decoding,
    prompt templates and the default length policy."""

    token_ids: str = default_of("token_ids")
    truncate: str = default_of("truncate")
    prompts: Mapping[str, str] = field(default_factory=dict)
    # Extra model name -> prompt name it applies.
    prompt_aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its public name, aliases, engine arguments and input policy."""

    name: str
    aliases: tuple[str, ...]
    engine: EngineSpec
    policy: InputPolicy = field(default_factory=InputPolicy)
    # The model of requests that name none (YAML `default: true`).
    default: bool = False

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.policy.prompt_aliases)


@dataclass(frozen=True)
class Settings:
    """The whole effective configuration, built once by `load_settings` and passed around."""

    host: str = default_of("host")
    port: int = default_of("port")
    log_level: str = default_of("log_level")
    log_format: str = default_of("log_format")
    engine: str = default_of("engine")
    tiktoken_cache_dir: str | None = default_of("tiktoken_cache_dir")
    # `auto` is decided from the hardware when loading; one process when built directly.
    workers: int = 1
    cpu_threads: str = default_of("cpu_threads")
    embedding_cache_size: int = default_of("embedding_cache_size")
    embedding_cache_bytes: int = default_of("embedding_cache_bytes")
    models: tuple[ModelConfig, ...] = field(default_factory=tuple)
    # No key: authentication is off (an option given without a key is an error instead).
    api_keys: tuple[str, ...] = ()
    api_key_file: str | None = default_of("api_key_file")
    public_metrics: bool = default_of("public_metrics")
    private_docs: bool = default_of("private_docs")
    rate_limit_rpm: int = default_of("rate_limit_rpm")
    rate_limit_tpm: int = default_of("rate_limit_tpm")
    cors_allow_origins: tuple[str, ...] = default_of("cors_allow_origins")
    max_body_bytes: int = default_of("max_body_bytes")
    max_header_bytes: int = default_of("max_header_bytes")
    header_timeout_s: float = default_of("header_timeout_s")
    body_timeout_s: float = default_of("body_timeout_s")
    keep_alive_timeout_s: float = default_of("keep_alive_timeout_s")
    max_connections: int | None = default_of("max_connections")
    max_inputs: int = default_of("max_inputs")
    max_request_tokens: int = default_of("max_request_tokens")
    max_rerank_documents: int = default_of("max_rerank_documents")
    max_rerank_chunks: int = default_of("max_rerank_chunks")
    max_token_vectors: int = default_of("max_token_vectors")
    # None: derived (gateway/serving/costs.py).
    max_input_chars: int | None = default_of("max_input_chars")
    max_request_chars: int | None = default_of("max_request_chars")
    max_inflight_inputs: int = default_of("max_inflight_inputs")
    request_timeout_s: float = default_of("request_timeout_s")
    health_check_interval_s: float = default_of("health_check_interval_s")
    health_check_timeout_s: float = default_of("health_check_timeout_s")
    engine_restart_attempts: int = default_of("engine_restart_attempts")
    engine_restart_backoff_s: float = default_of("engine_restart_backoff_s")
    drain_grace_s: float = default_of("drain_grace_s")
    # The OTLP/HTTP traces URL; None: tracing off.
    otlp_endpoint: str | None = default_of("otlp_endpoint")
    # None (an app built without load_settings, as in tests): a temporary folder per app.
    batch_dir: str | None = default_of("batch_dir")
    batch_database_url: str | None = default_of("batch_database_url")
    batch_max_file_bytes: int = default_of("batch_max_file_bytes")
    batch_max_lines: int = default_of("batch_max_lines")
    batch_max_stored_bytes: int = default_of("batch_max_stored_bytes")
    batch_min_free_bytes: int = default_of("batch_min_free_bytes")
    batch_max_output_bytes: int = default_of("batch_max_output_bytes")
    batch_file_ttl_s: int = default_of("batch_file_ttl_s")
    batch_max_inflight_tokens: int = default_of("batch_max_inflight_tokens")
    batch_quiet_after_s: float = default_of("batch_quiet_after_s")
    batch_quiet_latency_ms: float = default_of("batch_quiet_latency_ms")
    batch_quiet_inflight_tokens: int = default_of("batch_quiet_inflight_tokens")

    def redacted(self) -> dict[str, Any]:
        """The effective config for the startup log; API keys appear only as a count, and
        credentials among engine arguments (e.g. `hf_token`) as `<redacted>`, the batch
        database URL without its password."""
        server = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        server["api_keys"] = f"<{len(self.api_keys)} keys>"
        if self.batch_database_url:
            server["batch_database_url"] = _without_password(self.batch_database_url)
        return {
            **server,
            "models": [
                {
                    "name": m.name,
                    "aliases": list(m.aliases),
                    "engine": redact_secrets(m.engine.__dict__),
                    "policy": m.policy.__dict__,
                }
                for m in self.models
            ],
        }


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:<redacted>@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
