"""What the tokenizer routes (TEI's and vLLM's /tokenize, /decode, /detokenize) and vLLM's
/score may cost, with the bounds /v1/embeddings has (gateway/serving/costs.py), checked before the
work: characters per text and per request before tokenizing, token ids per request before
decoding, and the tokens an answer may return. A tokenize answer is tens of bytes per
token (TEI's form repeats each token's text and offsets), so large answers are built and
serialised in a thread, where they do not hold up /health and every other request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from gateway.errors import invalid
from gateway.serving import costs

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.serving.registry import ServedModel

T = TypeVar("T")
# Answers with more tokens (or ids) than this are built off the event loop: about 1 ms of
# Python work per thousand tokens.
INLINE_TOKENS = 4096


def check_texts(texts: Sequence[str], served: ServedModel, settings: Settings, param: str) -> None:
    """Texts to tokenize: never truncated, so each gets the per-input bound."""
    costs.check_chars(
        [len(text) for text in texts],
        truncating=False,
        settings=settings,
        window=served.engine.facts.max_model_len,
        model=served.name,
        param=param,
        advice="tokenize a shorter text",  # these routes never truncate
    )


def check_ids(rows: Sequence[Sequence[int]], settings: Settings, param: str) -> None:
    """Token ids to decode: the model's own tokens, so the request's token bound applies."""
    total = sum(map(len, rows))
    if total > settings.max_request_tokens:
        raise invalid(
            f"`{param}` holds {total} token ids in all, but a request may have at most "
            f"{settings.max_request_tokens} (--max-request-tokens)",
            param=param,
        )


def check_returned(count: int, settings: Settings, param: str) -> None:
    """The tokens an answer would return, counted before it is built."""
    if count > settings.max_request_tokens:
        raise invalid(
            f"the texts make {count} tokens in all, but a request may have at most "
            f"{settings.max_request_tokens} (--max-request-tokens); send less text per request",
            param=param,
        )


def check_pairs(pairs: Sequence[tuple[str, str]], settings: Settings, param: str) -> None:
    """vLLM's /score ranks once per distinct first text: all of them and every second text
    count toward one request's characters, as a rerank's query and documents do."""
    firsts = dict.fromkeys(first for first, _ in pairs)
    total = sum(map(len, firsts)) + sum(len(second) for _, second in pairs)
    costs.check_request_chars(total, settings, param=param)


async def built(size: int, build: Callable[[], T]) -> T:
    """`build()`, in a thread when the answer holds more than INLINE_TOKENS tokens."""
    if size <= INLINE_TOKENS:
        return build()
    return await asyncio.to_thread(build)
