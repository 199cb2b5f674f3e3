"""What a request may cost, checked from the body before any tokenizing or decoding.

Tokenizing and decoding cost time and memory in proportion to characters, so characters are
bounded first: per input that is not truncated (a longer one cannot fit the window unless it
is mostly spaces, and tokenizing it just to say so is the cost to avoid) and per request. A
truncated input is only tokenized as far as its kept tokens need (the adapters'
`truncation_window`), so it counts up to the per-input bound. Token ids count as the text they
decode to, measured before decoding (`Cl100kDecoder.decoded_sizes`), and, for the model's own
ids, as the tokens they are.

The defaults are derived with CHARS_PER_TOKEN characters per token, about four times what
English text takes (whitespace-heavy text takes more: `--max-input-chars` raises the bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.errors import invalid

if TYPE_CHECKING:  # gateway.config is heavy; the annotation alone needs it
    from gateway.config import Settings

CHARS_PER_TOKEN = 16


def input_chars(settings: Settings, window: int) -> int:
    """Most characters in one input that is not truncated."""
    return settings.max_input_chars or CHARS_PER_TOKEN * window


def request_chars(settings: Settings) -> int:
    """Most characters in one request."""
    return settings.max_request_chars or CHARS_PER_TOKEN * settings.max_request_tokens


def check_chars(
    sizes: Sequence[int],
    *,
    truncating: bool,
    settings: Settings,
    window: int,
    model: str,
    what: str = "input",
    decoded: bool = False,
    param: str | None = None,
    advice: str = 'shorten it, or send "truncate": "end"',
) -> None:
    """`sizes[i]`: input i's characters (for token ids, the bytes they decode to, which
    bound the characters). Decoding makes the whole text even when it is then truncated, so
    decoded inputs count in full toward the request."""
    most = input_chars(settings, window)
    total = 0
    for i, size in enumerate(sizes):
        if size > most and not truncating:
            kind = "decodes to" if decoded else "has"
            raise invalid(
                f"{what} {i} {kind} {size} characters, more than model '{model}' accepts "
                f"untruncated ({most}, {CHARS_PER_TOKEN} per token of its {window}-token "
                f"window; --max-input-chars); {advice}",
                param=param or _param(what),
            )
        total += size if decoded else min(size, most)
    check_request_chars(total, settings, what=what, param=param)


def check_request_chars(
    total: int, settings: Settings, *, what: str = "input", param: str | None = None
) -> None:
    most = request_chars(settings)
    if total > most:
        raise invalid(
            f"the {what}s have {total} characters in all, but a request may have at "
            f"most {most} (--max-request-chars)",
            param=param or _param(what),
        )


def check_native_ids(
    lengths: Sequence[int], *, truncating: bool, window: int, settings: Settings
) -> None:
    """The model's own ids are its tokens: the request's token limit applies before any
    work (truncated inputs count as the window they are cut to)."""
    total = sum(min(n, window) if truncating else n for n in lengths)
    if total > settings.max_request_tokens:
        raise invalid(
            f"the inputs have {total} tokens in all, but a request may have at most "
            f"{settings.max_request_tokens}",
            param="input",
        )


def _param(what: str) -> str:
    return {"input": "input", "document": "documents", "text": "texts"}.get(what, what)
