"""Every option, declared once: its flag, environment variable, parser, help and built-in
default. `serve --help`, the README's options table and Settings' field defaults all read
these declarations, so a default is stated in one place.

Server options apply to the process. Model options are engine arguments: with `--model` they
describe the one model to serve; with a YAML `models:` list they are defaults for every entry
that does not set the key itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import parsers

_MIB = 1 << 20
_GIB = 1 << 30
_DAY_S = 24 * 3600
# The characters per token the derived character limits allow (gateway/serving/costs.py derives them;
# a test keeps the two equal).
_CHARS_PER_TOKEN = 16
# Named because the derived --max-request-chars default is stated from it too.
_MAX_REQUEST_TOKENS = 300_000


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which option and why."""


@dataclass(frozen=True)
class Option:
    """One setting: where it lives (`server` or `model`), how it is parsed, its help and its
    built-in default."""

    name: str
    scope: str
    parse: Callable[[Any], Any]
    # Sentences ending in a period, without the default: `help_text` adds it.
    help: str
    env: str | None = None
    metavar: str | None = None
    cli: str | None = None  # the flag, when it is not the name with dashes
    repeat: bool = False  # the flag may be given several times (values are appended)
    # An empty value from the environment is an error rather than "unset" (API keys).
    blank_is_error: bool = False
    # The built-in value as a user would write it; `parse` turns it into the Settings value.
    # None: no built-in value (unset; `default_note` may say what happens then).
    default: str | int | float | bool | tuple[()] | None = None
    # Why the default is what it is, or, without one, what an unset option means.
    default_note: str | None = None

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")

    @property
    def parsed_default(self) -> Any:
        """The built-in default as Settings holds it (lists as tuples); None when unset."""
        if self.default is None:
            return None
        value = self.parse(self.default)
        return tuple(value) if isinstance(value, list) else value

    @property
    def default_text(self) -> str:
        """`(default 8000)`, as `serve --help` and the docs state it; empty without one."""
        if self.default is None:
            return f"(default: {self.default_note})" if self.default_note else ""
        note = f", {self.default_note}" if self.default_note else ""
        return f"(default {self._shown()}{note})"

    @property
    def help_text(self) -> str:
        """The help with its default, as `serve --help` and the docs show it."""
        if not self.default_text:
            return self.help
        return f"{self.help.removesuffix('.')} {self.default_text}."

    def _shown(self) -> str:
        value = self.default
        if isinstance(value, bool):
            return str(value).lower()
        if value == ():
            return "none"
        text = str(value)
        if isinstance(value, int) and value > 0:
            if self.name.endswith("_bytes") and value % _MIB == 0:
                unit, size = ("GiB", _GIB) if value % _GIB == 0 else ("MiB", _MIB)
                text += f" = {value // size} {unit}"
            elif self.name.endswith("_s") and value % _DAY_S == 0:
                text += f" = {value // _DAY_S} days"
        return text


OPTIONS: tuple[Option, ...] = (
    Option(
        "config",
        "server",
        str,
        "YAML file with server settings and a `models:` list.",
        env="GATEWAY_CONFIG",
        metavar="FILE",
    ),
    Option(
        "host",
        "server",
        str,
        "Interface to listen on.",
        env="GATEWAY_HOST",
        default="0.0.0.0",
    ),
    Option("port", "server", int, "TCP port to listen on.", env="GATEWAY_PORT", default=8000),
    Option(
        "log_level",
        "server",
        str,
        "Logging level: debug, info, warning, error.",
        env="GATEWAY_LOG_LEVEL",
        default="info",
    ),
    Option(
        "log_format",
        "server",
        parsers.log_format,
        "Log lines, vLLM's own included (at the same level), as json (one object per line, "
        "with the request id), text, or auto: text on a terminal, else json.",
        env="GATEWAY_LOG_FORMAT",
        default="auto",
    ),
    Option(
        "tiktoken_cache_dir",
        "server",
        str,
        "Folder holding tiktoken's cl100k_base file "
        "(named 9b5ad71b2ce5302211f9c61530b329a4922fc6a4, as tiktoken caches it, or "
        "cl100k_base.tiktoken), used to decode token-id inputs; read offline, never "
        "downloaded.",
        env="TIKTOKEN_CACHE_DIR",
        metavar="DIR",
        default_note="tiktoken's own cache folder",
    ),
    Option(
        "engine",
        "server",
        str,
        "Engine backend: vllm, or fake for instant "
        "deterministic vectors that measure the gateway alone.",
        env="GATEWAY_ENGINE",
        default="vllm",
    ),
    Option(
        "workers",
        "server",
        parsers.worker_count,
        "Gateway worker processes on the one port, each with "
        "its own engine per model (SO_REUSEPORT): auto is 1 on CPU and, on a GPU, "
        "up to 4 for models under 1 GB (one per 4 CPU cores), which hides the engine front "
        "end's per-request CPU work; memory shares then apply per engine.",
        env="GATEWAY_WORKERS",
        default="auto",
    ),
    Option(
        "cpu_threads",
        "server",
        str,
        "CPU cores the vLLM CPU engine's model threads run "
        "on (no effect on a GPU): all binds them to every core this process may "
        "use; auto is vLLM's own choice, which keeps one core for its scheduler (on 2 cores "
        "that halves the model's speed); or a core list such as 0-3. Sets vLLM's "
        "VLLM_CPU_OMP_THREADS_BIND.",
        env="GATEWAY_CPU_THREADS",
        default="all",
        # An operator's own vLLM setting is not silently replaced.
        default_note="or VLLM_CPU_OMP_THREADS_BIND when that is set",
    ),
    Option(
        "embedding_cache_size",
        "server",
        int,
        "Keep the vectors of this many recent distinct inputs per model in memory (0: off) "
        "and answer repeats from there; identical inputs within one request are always "
        "embedded once.",
        env="GATEWAY_EMBEDDING_CACHE_SIZE",
        metavar="N",
        default=0,
    ),
    Option(
        "embedding_cache_bytes",
        "server",
        parsers.positive(int),
        "Bound of each model's "
        "embedding cache in bytes, inputs and vectors together; the least recently used "
        "entries go first.",
        env="GATEWAY_EMBEDDING_CACHE_BYTES",
        metavar="BYTES",
        default=256 * _MIB,
    ),
    # -- security and limits (see README "Reliability and security") ---------------------
    Option(
        "api_keys",
        "server",
        parsers.api_keys,
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
        "File of API keys, e.g. a mounted Kubernetes Secret: "
        "one `key` or `name:key` a line (blank lines and lines starting with # are "
        "ignored), or YAML entries with `name`, `key` or `key_sha256`, and per-key `rpm`, "
        "`tpm`, `batch_bytes` and `admin`; added to --api-key. Re-read within seconds "
        "when it changes. A file without a key is a startup error.",
        env="GATEWAY_API_KEY_FILE",
        metavar="FILE",
        blank_is_error=True,
    ),
    Option(
        "rate_limit_rpm",
        "server",
        parsers.non_negative,
        "Requests per minute each API key may "
        "make, unless its key file entry sets `rpm`; 0: no limit. Per worker host: "
        "replicas count separately.",
        env="GATEWAY_RATE_LIMIT_RPM",
        metavar="N",
        default=0,
    ),
    Option(
        "rate_limit_tpm",
        "server",
        parsers.non_negative,
        "Input tokens per minute each API key may "
        "use, unless its key file entry sets `tpm`; 0: no limit. Counted from each answer's "
        "usage once it is answered.",
        env="GATEWAY_RATE_LIMIT_TPM",
        metavar="N",
        default=0,
    ),
    Option(
        "public_metrics",
        "server",
        parsers.boolean,
        "Serve /metrics without an API key; /health and /ready are always public.",
        env="GATEWAY_PUBLIC_METRICS",
        default=False,
    ),
    Option(
        "private_docs",
        "server",
        parsers.boolean,
        "Put /docs and /openapi.json behind the API key; the document lists the served "
        "model names and the limits.",
        env="GATEWAY_PRIVATE_DOCS",
        default=False,
    ),
    Option(
        "cors_allow_origins",
        "server",
        parsers.str_list,
        "Origins allowed to call from a browser, comma-separated; none turns CORS off.",
        env="GATEWAY_CORS_ALLOW_ORIGINS",
        default=(),
    ),
    Option(
        "max_body_bytes",
        "server",
        parsers.positive(int),
        "Largest request body in bytes, checked before it is read.",
        env="GATEWAY_MAX_BODY_BYTES",
        default=8 * _MIB,
    ),
    Option(
        "max_header_bytes",
        "server",
        parsers.positive(int),
        "Largest request line plus headers "
        "in bytes; past it the answer is 431 and the connection is closed.",
        env="GATEWAY_MAX_HEADER_BYTES",
        default=64 * 1024,
    ),
    Option(
        "header_timeout_s",
        "server",
        parsers.positive(float),
        "Seconds a client has to send a "
        "request's line and headers, from the connection (or from the request's first "
        "byte on a kept-alive one); past it the connection is closed.",
        env="GATEWAY_HEADER_TIMEOUT_S",
        default=30,
    ),
    Option(
        "body_timeout_s",
        "server",
        parsers.positive(float),
        "A request body that stalls (no byte) this many seconds has its connection closed.",
        env="GATEWAY_BODY_TIMEOUT_S",
        default=30,
    ),
    Option(
        "keep_alive_timeout_s",
        "server",
        parsers.positive(float),
        "Seconds an idle kept-alive connection stays open between requests.",
        env="GATEWAY_KEEP_ALIVE_TIMEOUT_S",
        default=5,
    ),
    Option(
        "max_connections",
        "server",
        parsers.positive(int),
        "Open connections per process. Past it, the connection that has waited longest "
        "for a request head (half-open or idle) is closed to make room; when every "
        "connection has a request in flight, a request past it gets 503 with Retry-After at "
        "once (except /health and /ready).",
        env="GATEWAY_MAX_CONNECTIONS",
        default_note="the open-files limit (`ulimit -n`) less 256 kept for other files",
    ),
    Option(
        "max_inputs",
        "server",
        parsers.positive(int),
        "Most inputs per embeddings request.",
        env="GATEWAY_MAX_INPUTS",
        default=2048,
        default_note="OpenAI's",
    ),
    Option(
        "max_request_tokens",
        "server",
        parsers.positive(int),
        "Most tokens per request, all inputs together, counted by the model's tokenizer.",
        env="GATEWAY_MAX_REQUEST_TOKENS",
        default=_MAX_REQUEST_TOKENS,
        default_note="OpenAI's",
    ),
    Option(
        "max_input_chars",
        "server",
        parsers.positive(int),
        "Most characters per input that is "
        "not truncated (a text, or the text token ids decode to, measured before decoding), "
        "checked before tokenizing; a truncated input may be longer: only a prefix or suffix "
        "of it is tokenized.",
        env="GATEWAY_MAX_INPUT_CHARS",
        default_note=f"{_CHARS_PER_TOKEN} per token of the model's window, e.g. "
        f"{_CHARS_PER_TOKEN * 512} for a 512-token model",
    ),
    Option(
        "max_request_chars",
        "server",
        parsers.positive(int),
        "Most characters per request, all "
        "inputs (or rerank query and documents) together, truncated inputs counted up to "
        "--max-input-chars and token ids as the text they decode to, checked before "
        "tokenizing or decoding.",
        env="GATEWAY_MAX_REQUEST_CHARS",
        default_note=f"{_CHARS_PER_TOKEN} per token of --max-request-tokens, "
        f"{_CHARS_PER_TOKEN * _MAX_REQUEST_TOKENS}",
    ),
    Option(
        "max_rerank_documents",
        "server",
        parsers.positive(int),
        "Most documents per rerank request.",
        env="GATEWAY_MAX_RERANK_DOCUMENTS",
        default=1000,
    ),
    Option(
        "max_rerank_chunks",
        "server",
        parsers.positive(int),
        "Most chunks per rerank request, "
        "all documents together, counted before any chunk is scored; --max-request-tokens "
        "applies to rerank too.",
        env="GATEWAY_MAX_RERANK_CHUNKS",
        default=10_000,
        default_note="Cohere's",
    ),
    Option(
        "max_token_vectors",
        "server",
        parsers.positive(int),
        "Most token vectors (ColBERT rows) per request, all inputs together, counted as the "
        "tokens the model reads and refused before the work: token vectors (TEI's /embed_all, "
        "vLLM's /pooling token_embed, `return_colbert_vecs`, multivector rerank) take "
        "tokens x the model's token dimension x 4 bytes.",
        env="GATEWAY_MAX_TOKEN_VECTORS",
        default=65_536,
    ),
    Option(
        "max_inflight_inputs",
        "server",
        parsers.positive(int),
        "Inputs in flight per model, all "
        "requests together; past it requests get 429 with Retry-After at once.",
        env="GATEWAY_MAX_INFLIGHT_INPUTS",
        default=4096,
    ),
    Option(
        "request_timeout_s",
        "server",
        parsers.positive(float),
        "Seconds a request may wait for "
        "its engine work; past it the work is aborted and the answer is 504.",
        env="GATEWAY_REQUEST_TIMEOUT_S",
        default=60,
    ),
    Option(
        "health_check_interval_s",
        "server",
        parsers.positive(float),
        "Seconds between engine health checks by the watchdog. Each check is a one-token "
        "request, after which vLLM's worker and engine-core processes busy-poll for a "
        "second: a shorter interval notices a hung engine sooner and keeps more of an idle "
        "machine busy, as make bench-idle measures.",
        env="GATEWAY_HEALTH_CHECK_INTERVAL_S",
        default=10,
    ),
    Option(
        "health_check_timeout_s",
        "server",
        parsers.positive(float),
        "An engine whose probe (a "
        "one-token request through it) gets no answer, and no other work completes, in this "
        "many seconds is declared hung: its requests fail with 503 and it is restarted.",
        env="GATEWAY_HEALTH_CHECK_TIMEOUT_S",
        default=10,
    ),
    Option(
        "engine_restart_attempts",
        "server",
        parsers.positive(int),
        "A dead or hung engine is "
        "restarted in-process; after this many starts in a row that do not hold (serve 60 "
        "s), the model is down and /health answers 503 so that the orchestrator restarts "
        "the process.",
        env="GATEWAY_ENGINE_RESTART_ATTEMPTS",
        metavar="N",
        default=5,
    ),
    Option(
        "engine_restart_backoff_s",
        "server",
        parsers.positive(float),
        "Seconds before the first restart of a dead engine, doubled for each next try up to 60.",
        env="GATEWAY_ENGINE_RESTART_BACKOFF_S",
        default=1,
    ),
    Option(
        "drain_grace_s",
        "server",
        parsers.positive(float),
        "On SIGTERM, seconds in-flight requests get to finish while new ones are refused with 503.",
        env="GATEWAY_DRAIN_GRACE_S",
        default=30,
    ),
    Option(
        "otlp_endpoint",
        "server",
        str,
        "Send OpenTelemetry traces over OTLP/HTTP to this collector (its base URL, e.g. "
        "http://localhost:4318, or the full .../v1/traces URL): a span per request, batch line "
        "and bulk chunk (docs/tracing.md); OTEL_SDK_DISABLED=true turns it off.",
        env="GATEWAY_OTLP_ENDPOINT",
        metavar="URL",
        default_note="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT when set, "
        "else off",
    ),
    # -- Batch API (see README "Bulk indexing") --------------------------------------------
    Option(
        "batch_dir",
        "server",
        str,
        "Folder for Batch API files and job state (SQLite); "
        "batches survive restarts and resume where they stopped.",
        env="GATEWAY_BATCH_DIR",
        metavar="DIR",
        default_note="$XDG_DATA_HOME/embedding-gateway/batches, ~/.local/share/... without it",
    ),
    Option(
        "batch_database_url",
        "server",
        str,
        "PostgreSQL URL (postgresql://user:password@host/db) for the Files and Batches "
        "records of a fleet: every replica answers every file and batch call and runs "
        "every batch's chunks under leases; --batch-dir must then be a folder all replicas share "
        "(docs/scaling.md).",
        env="GATEWAY_BATCH_DATABASE_URL",
        metavar="URL",
        default_note="unset: SQLite in --batch-dir, for one host",
    ),
    Option(
        "batch_max_file_bytes",
        "server",
        parsers.positive(int),
        "Largest Batch API upload in "
        "bytes; POST /v1/files gets this body limit instead of --max-body-bytes.",
        env="GATEWAY_BATCH_MAX_FILE_BYTES",
        default=200 * _MIB,
        default_note="OpenAI's",
    ),
    Option(
        "batch_max_stored_bytes",
        "server",
        parsers.non_negative,
        "Bytes of Batch API files (uploads and "
        "results) each API key may keep, unless its key file entry sets `batch_bytes`; an "
        "upload past it gets 413. 0: no limit.",
        env="GATEWAY_BATCH_MAX_STORED_BYTES",
        metavar="BYTES",
        default=0,
    ),
    Option(
        "batch_max_lines",
        "server",
        parsers.positive(int),
        "Most requests (lines) in a batch file.",
        env="GATEWAY_BATCH_MAX_LINES",
        default=50_000,
        default_note="OpenAI's",
    ),
    Option(
        "batch_min_free_bytes",
        "server",
        int,
        "Uploads are refused (507) unless this many "
        "bytes stay free on the batch folder's disk after them, as results need room too; "
        "running batches pause below it (they stay in_progress and resume once there is room).",
        env="GATEWAY_BATCH_MIN_FREE_BYTES",
        default=_GIB,
    ),
    Option(
        "batch_max_output_bytes",
        "server",
        parsers.positive(int),
        "Most bytes of results (output and error files together) one batch may write; a "
        "batch that would write more fails with output_too_large.",
        env="GATEWAY_BATCH_MAX_OUTPUT_BYTES",
        default=4 * _GIB,
        default_note="about 20 times the largest upload: float vectors in JSON are about "
        "1000 times the text of a short input",
    ),
    Option(
        "batch_file_ttl_s",
        "server",
        parsers.positive(int),
        "Seconds until uploaded and result "
        "files expire and are deleted, unless the request sets expires_after.",
        env="GATEWAY_BATCH_FILE_TTL_S",
        default=30 * _DAY_S,
        default_note="OpenAI's",
    ),
    Option(
        "batch_max_inflight_tokens",
        "server",
        parsers.positive(int),
        "Batch work's tokens in the engines "
        "while interactive requests arrive (any within --batch-quiet-after-s). Each batch "
        "input starts only while no interactive request is in flight, and within this "
        "budget (an input bigger than the budget starts alone), so an interactive request "
        "waits behind at most an engine step of this size. Higher finishes batches sooner "
        "under traffic and delays interactive requests more.",
        env="GATEWAY_BATCH_MAX_INFLIGHT_TOKENS",
        default=32,
        default_note="one short input at a time, under 10 ms of work on 2 CPU cores",
    ),
    Option(
        "batch_quiet_after_s",
        "server",
        parsers.positive(float),
        "Seconds without an interactive "
        "request after which batch work's budget is steered by --batch-quiet-latency-ms "
        "instead of --batch-max-inflight-tokens.",
        env="GATEWAY_BATCH_QUIET_AFTER_S",
        default=10,
    ),
    Option(
        "batch_quiet_latency_ms",
        "server",
        parsers.positive(float),
        "Once no interactive request has "
        "arrived for --batch-quiet-after-s, batch work's tokens in the engines are steered "
        "so that a batch input comes back in about this long: the first interactive request "
        "after a quiet spell waits behind about that much. Higher gives batches more "
        "throughput when alone and delays that request more.",
        env="GATEWAY_BATCH_QUIET_LATENCY_MS",
        default=10,
        default_note="about one idle request's latency on 2 CPU cores, where it kept that "
        "request within 2x its idle latency",
    ),
    Option(
        "batch_quiet_inflight_tokens",
        "server",
        parsers.positive(int),
        "The most tokens --batch-quiet-latency-ms "
        "may steer batch work to in the engines after a quiet spell; the same value as "
        "--batch-max-inflight-tokens fixes the budget there too.",
        env="GATEWAY_BATCH_QUIET_INFLIGHT_TOKENS",
        default=1024,
        default_note="near the engine's full throughput on 2 CPU cores",
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
        "Name clients use for --model.",
        env="GATEWAY_SERVED_MODEL_NAME",
        default_note="the folder or hub id's last component",
    ),
    Option(
        "aliases",
        "model",
        parsers.str_list,
        "Other names for --model, comma-separated.",
        env="GATEWAY_ALIASES",
    ),
    # Engine arguments: adapters.base.EngineSpec holds the same defaults for a spec built
    # without options (a test keeps the two equal).
    Option(
        "dtype",
        "model",
        str,
        "Weights and activation dtype: auto (float32 on CPU), float32, float16, bfloat16.",
        env="GATEWAY_DTYPE",
        default="auto",
    ),
    Option(
        "max_model_len",
        "model",
        int,
        "Longest input in tokens.",
        env="GATEWAY_MAX_MODEL_LEN",
        default_note="the model's own",
    ),
    Option(
        "gpu_memory_utilization",
        "model",
        float,
        "Share of accelerator memory for this engine, 0-1.",
        env="GATEWAY_GPU_MEMORY_UTILIZATION",
        default_note="0.9 split evenly across models on GPU; 0.2 of host memory on CPU",
    ),
    Option(
        "max_num_batched_tokens",
        "model",
        int,
        "Tokens per engine step.",
        env="GATEWAY_MAX_NUM_BATCHED_TOKENS",
        default=16384,
        default_note="as vLLM's offline LLM; AsyncLLM's own 2048 costs a third of the throughput",
    ),
    Option(
        "max_num_seqs",
        "model",
        int,
        "Sequences per engine step.",
        env="GATEWAY_MAX_NUM_SEQS",
        default=1024,
    ),
    Option(
        "tensor_parallel_size",
        "model",
        int,
        "GPUs per engine.",
        env="GATEWAY_TENSOR_PARALLEL_SIZE",
        default=1,
    ),
    Option(
        "trust_remote_code",
        "model",
        parsers.boolean,
        "Allow model code from the hub.",
        env="GATEWAY_TRUST_REMOTE_CODE",
        default=False,
    ),
    Option(
        "rerank_kind",
        "model",
        parsers.rerank_kind,
        "How the model reranks: cross_encoder, embedding, llm (a causal LM loaded as a "
        "classifier via --hf-overrides), or auto: sequence classifiers score pairs, "
        "embedding models use cosine.",
        env="GATEWAY_RERANK_KIND",
        default="auto",
    ),
    Option(
        "outputs",
        "model",
        parsers.outputs,
        "What the model computes, comma-separated: dense, sparse, multivector (token "
        "vectors), classify, score. Each must be one the loaded model can compute, else the "
        "start fails. Empty: what its files show (bge-m3 dense, sparse and multivector; "
        "SPLADE sparse; ColBERT multivector; a classifier classify, and score with one "
        "label; another encoder dense and multivector). YAML key: `outputs`.",
        env="GATEWAY_MODEL_OUTPUTS",
        metavar="LIST",
        # `--outputs` is the bulk command's choice of what to write.
        cli="--model-outputs",
        default=(),
    ),
    Option(
        "rerank_activation",
        "model",
        parsers.activation,
        "Pair-model relevance scores: sigmoid (in [0, 1] as Cohere's) or raw logits.",
        env="GATEWAY_RERANK_ACTIVATION",
        default="sigmoid",
    ),
    Option(
        "score_template",
        "model",
        parsers.template,
        "Jinja template (inline, or a file path) "
        "that turns a pair into one prompt, with messages of roles `query` and `document`, "
        "as vLLM's score template; LLM rerankers such as Qwen3-Reranker need it.",
        env="GATEWAY_SCORE_TEMPLATE",
        metavar="TEMPLATE",
    ),
    Option(
        "hf_overrides",
        "model",
        parsers.json_object,
        "Model config overrides as a JSON object "
        "(vLLM's hf_overrides), e.g. to load Qwen3-Reranker as a yes/no classifier.",
        env="GATEWAY_HF_OVERRIDES",
        metavar="JSON",
    ),
    # Input policy (settings.InputPolicy takes its defaults from here).
    Option(
        "token_ids",
        "model",
        str,
        "How to read token-id inputs (lists of integers): native (the model's own "
        "vocabulary) or cl100k_base, what OpenAI clients such as LangChain send: decoded "
        "with tiktoken and re-tokenized for the model.",
        env="GATEWAY_TOKEN_IDS",
        default="cl100k_base",
    ),
    Option(
        "truncate",
        "model",
        str,
        "Inputs longer than the model's window: none (a 400 stating the counts), end (keep "
        "the first tokens) or start (keep the last); requests may override it with "
        "`truncate`.",
        env="GATEWAY_TRUNCATE",
        default="none",
    ),
    Option(
        "prompts",
        "model",
        parsers.json_object,
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
        parsers.json_object,
        "Extra model names that apply a prompt, "
        'as a JSON object of name to prompt name, e.g. \'{"e5-query": "query"}\'.',
        env="GATEWAY_PROMPT_ALIASES",
        metavar="JSON",
    ),
    Option(
        "engine_kwargs",
        "model",
        parsers.json_object,
        "Extra vLLM engine arguments as a JSON object, e.g. '{\"enforce_eager\": true}'.",
        env="GATEWAY_ENGINE_KWARGS",
        metavar="JSON",
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}


def default_of(name: str) -> Any:
    """The built-in default of option `name` as Settings holds it (None when it has none)."""
    return BY_NAME[name].parsed_default
