"""How the adapter calls the model's tokenizer: small work on the event loop, large work in a
thread that stops when its request is abandoned, failures as `InvalidInput`; and the Rust batch
encoder that tokenizes many texts in one call."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from adapters.base import InvalidInput

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Tokenizer work on at most this many characters stays on the event loop (a thread hop costs
# more); larger work runs in a thread, a group of texts of about GROUP_CHARS characters at a
# time, checking between groups whether the request was abandoned (timeout, disconnect).
# Decided by characters, never by the number of texts: one text can be megabytes.
INLINE_CHARS = 4096
GROUP_CHARS = 65536


class Abandoned(Exception):
    """Raised in a worker thread whose request was abandoned; nobody reads it."""


def stop_if_abandoned(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Abandoned()


def unless_abandoned(cancel: threading.Event | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    stop_if_abandoned(cancel)
    return fn(*args, **kwargs)


async def off_loop(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args, cancel)`: on the event loop for at most INLINE_CHARS characters of work,
    else in a thread; if the awaiting request is cancelled, `cancel` is set, and `fn`, which
    checks it between bounded steps, stops at the next one instead of burning CPU."""
    cancel = threading.Event()
    call_args = (*args, cancel)
    if size <= INLINE_CHARS:
        return _tokenizer_call(fn, *call_args)
    try:
        return await asyncio.to_thread(_tokenizer_call, fn, *call_args)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _tokenizer_call(fn: Callable[..., _T], *args: Any) -> _T:
    try:
        return fn(*args)
    except (InvalidInput, Abandoned, KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        # A tokenizer or template failure must not become an opaque 500. A Rust panic in
        # `tokenizers` arrives as pyo3's PanicException, which derives from BaseException
        # (PyO3#2783), so `except Exception` would let it through.
        raise InvalidInput(
            f"the model's tokenizer rejected the input: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


# Texts the Rust batch encoder must tokenize exactly as the Python tokenizer does before it is
# trusted: punctuation, accents, CJK, emoji, the empty string, and a text past 128 tokens.
_ENCODER_PROBES = ["A probe, with Ünïcödé; 日本語 and emoji 🚀.", "", "word " * 300]


def rust_batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]] | None:
    """The `tokenizers` library's own `encode_batch` (Rust, GIL released, about twice the
    speed of the transformers wrapper's batch call), on a private copy of the tokenizer with
    truncation and padding off (tokenizer.json files often carry them; the wrapper switches
    them off per call). None when the tokenizer is not a fast one, or when the copy does not
    give the wrapper's ids on the probes; the wrapper is used then."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    try:
        own = type(backend).from_str(backend.to_str())
        own.no_truncation()
        own.no_padding()

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in own.encode_batch(texts, add_special_tokens=True)]

        same = (
            encode(_ENCODER_PROBES)
            == tokenizer(_ENCODER_PROBES, add_special_tokens=True)["input_ids"]
        )
    except Exception:  # any surprise in a tokenizer's internals: keep the wrapper
        log.warning(
            "tokenizer batch encoder unavailable; using the transformers wrapper", exc_info=True
        )
        return None
    return encode if same else None
