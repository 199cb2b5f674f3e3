"""Settings from the command line, the environment and the YAML model file: the only reader of
`os.environ` and of that file. Precedence, lowest first: built-in default < YAML file <
environment < command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Container, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from adapters.base import TRUNCATE_CHOICES, EngineSpec
from gateway import hardware
from gateway.config.model_files import (
    BUILTIN_PREFIX,
    DEFAULT_MODEL_ALIASES,
    DEFAULT_MODEL_NAME,
    folder_prompts,
    resolve_model_path,
    with_memory_shares,
)
from gateway.config.options import BY_NAME, OPTIONS, ConfigError, Option
from gateway.config.parsers import boolean
from gateway.config.settings import InputPolicy, ModelConfig, Settings
from gateway.tenancy.keys import KeyFileError, read_key_file

TOKEN_ID_MODES = ("cl100k_base", "native")
# Model keys a YAML entry may carry beyond the engine-argument options. `default: true` names
# the model that requests without a `model` field get (the texts API's and TEI's /embed, ...).
_MODEL_ONLY_KEYS = {"name", "path", "default"}
_TRACES_PATH = "/v1/traces"


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
            # Unset stays None, so that the environment and the YAML file can still apply.
            default=None,
            metavar=option.metavar,
            help=option.help_text + env,
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
        k: _parse(BY_NAME[k], v, f"config file {config_path}: `{k}`")
        for k, v in file_data.items()
        if k in BY_NAME and BY_NAME[k].scope == "server" and k != "config"
    }
    server.update({k: v for k, v in given.items() if BY_NAME[k].scope == "server"})
    if server.get("api_key_file") is not None:
        check_key_file(str(server["api_key_file"]))
    model_flags = {k: v for k, v in given.items() if BY_NAME[k].scope == "model"}

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
    workers = _parse(BY_NAME["workers"], server.get("workers", BY_NAME["workers"].default))
    if workers is None:
        workers = hardware.default_workers(
            [m.engine.model for m in models],
            gpu=hardware.has_nvidia_gpu(),
            cpus=os.cpu_count() or 1,
        )
    cache_size = _parse(
        BY_NAME["embedding_cache_size"],
        server.get("embedding_cache_size", Settings.embedding_cache_size),
    )
    if cache_size < 0:
        raise ConfigError(f"--embedding-cache-size: must be 0 (off) or more, got {cache_size}")
    # Options passed through as given (lists as tuples); Settings' own defaults fill the rest.
    passed: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in server.items() if k in _PASSED_THROUGH
    }
    return Settings(
        host=str(server.get("host", Settings.host)),
        port=_parse(BY_NAME["port"], server.get("port", Settings.port)),
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
        otlp_endpoint=otlp_endpoint(server.get("otlp_endpoint"), environ),
        models=with_memory_shares(models, workers),
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
    "otlp_endpoint",
}


def otlp_endpoint(given: str | None, environ: Mapping[str, str]) -> str | None:
    """The traces URL: the option's, else the OpenTelemetry variables' (the SDK's own
    precedence), else None (off); OTEL_SDK_DISABLED=true is off whatever is set."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if given:
        return traces_url(given)
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return traces_url(base) if base else None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (`http://host:4318`), as
    OTEL_EXPORTER_OTLP_ENDPOINT is read; a URL already ending in /v1/traces is kept."""
    trimmed = endpoint.rstrip("/")
    return trimmed if trimmed.endswith(_TRACES_PATH) else trimmed + _TRACES_PATH


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


def check_key_file(path: str) -> None:
    """A startup error unless the API key file can be used; the server reads it (and reads
    it again when it changes) itself."""
    source = BY_NAME["api_key_file"].flag
    if not path.strip():
        raise ConfigError(f"{source}: the file name is empty")
    try:
        read_key_file(path)
    except KeyFileError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{BY_NAME[name].flag}: must be one of {list(allowed)}, got {value!r}")
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
        if key in BY_NAME and raw is not None:
            values[key] = _parse(BY_NAME[key], raw)
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
        default = boolean(entry.get("default", False))
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
    prompts = {**folder_prompts(folder), **values.get("prompts", {})}
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
        token_ids=_choice(
            "token_ids", values.get("token_ids", InputPolicy.token_ids), TOKEN_ID_MODES
        ),
        truncate=_choice(
            "truncate", values.get("truncate", InputPolicy.truncate), TRUNCATE_CHOICES
        ),
        prompts=prompts,
        prompt_aliases=aliases,
    )


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
