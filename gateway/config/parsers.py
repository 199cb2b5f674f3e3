"""Parsers of option values: each takes what a flag, an environment variable or the YAML file
gave (text, or a YAML scalar or list) and returns the value Settings holds, or raises
ValueError or TypeError with a message that the loader prefixes with where the value came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.base import OUTPUTS, RERANK_KINDS


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def json_object(value: Any) -> dict[str, Any]:
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise TypeError("expected a JSON object")
    return parsed


def worker_count(value: Any) -> int | None:
    """A positive count, or None for `auto` (decided from the hardware and the models)."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    count = int(value)
    if count < 1:
        raise ValueError(f"must be `auto` or at least 1, got {count}")
    return count


def str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [part for item in value for part in str_list(str(item))]


def log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("auto", "json", "text"):
        raise ValueError(f"expected auto, json or text, got {value!r}")
    return text


def api_keys(value: Any) -> list[str]:
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


def positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be positive, got {value!r}")
        return number

    return parse


def non_negative(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return number


def rerank_kind(value: Any) -> str:
    kind = str(value).strip().lower().replace("-", "_")
    if kind not in RERANK_KINDS:
        raise ValueError(f"expected one of {list(RERANK_KINDS)}, got {value!r}")
    return kind


def outputs(value: Any) -> tuple[str, ...]:
    """Names of `OUTPUTS`, comma-separated or a list, each once."""
    names = tuple(part.lower() for part in str_list(value))
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise ValueError(f"expected some of {list(OUTPUTS)}, got {unknown}")
    if len(set(names)) != len(names):
        raise ValueError(f"each output once, got {list(names)}")
    return names


def activation(value: Any) -> bool:
    """`sigmoid` (the model's activation, Cohere-like scores in [0, 1]) or `raw` logits."""
    text = str(value).strip().lower()
    if text not in {"sigmoid", "raw"}:
        raise ValueError(f"expected sigmoid or raw, got {value!r}")
    return text == "sigmoid"


def template(value: Any) -> str:
    """A Jinja template inline, or the path of a file holding one."""
    text = str(value)
    if "\n" not in text and "{" not in text and Path(text).is_file():
        return Path(text).read_text()
    return text
