"""Checks on prompts' token ids shared by every adapter: ids within the vocabulary, and the
length policy (reject or truncate over-long prompts, keeping the special tokens the tokenizer
added)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from adapters.base import EmbedOptions, InvalidInput


def check_vocabulary(ids: Sequence[int], vocab_size: int, *, index: int) -> list[int]:
    """Client-sent ids as a list, or `InvalidInput` naming the first id outside 0..vocab-1."""
    if not ids:
        raise InvalidInput(f"input {index} is an empty list of token ids", index=index)
    for token in ids:
        if not 0 <= token < vocab_size:
            raise InvalidInput(f"input {index}: token id {token} is outside the model's "
                               f"vocabulary (0 to {vocab_size - 1})", index=index)
    return list(ids)


@dataclass(frozen=True)
class SpecialTokens:
    """How many special tokens the tokenizer puts before and after a text's own tokens
    (BERT: [CLS] ... [SEP] is 1 and 1; Qwen3-Embedding: ... <|endoftext|> is 0 and 1)."""

    prefix: int = 0
    suffix: int = 0

    @classmethod
    def of(cls, with_special: Sequence[int], plain: Sequence[int]) -> "SpecialTokens":
        """Find `plain` (a probe text without special tokens) inside `with_special` (the same
        text with them)."""
        n = len(plain)
        for start in range(len(with_special) - n + 1):
            if list(with_special[start:start + n]) == list(plain):
                return cls(start, len(with_special) - start - n)
        return cls()  # the tokenizer rewrote the probe; truncate without protecting anything


def fit(
    token_ids: Sequence[list[int]],
    options: EmbedOptions,
    *,
    max_model_len: int,
    model: str,
    specials: Sequence[SpecialTokens],
) -> tuple[list[list[int]], tuple[int, ...]]:
    """Each prompt's ids within the limit, and the indices of those that were truncated.

    `specials[i]` says what prompt i's tokenizer added (nothing for ids a client sent)."""
    if options.max_tokens is not None and options.max_tokens > max_model_len:
        raise InvalidInput(f"the requested token limit {options.max_tokens} is larger than "
                           f"model '{model}''s window of {max_model_len} tokens")
    limit = options.max_tokens or max_model_len
    fitted: list[list[int]] = []
    truncated: list[int] = []
    for i, ids in enumerate(token_ids):
        if len(ids) <= limit:
            fitted.append(ids)
            continue
        if options.truncate == "none":
            raise InvalidInput(
                f"input {i} has {len(ids)} tokens, but model '{model}' accepts at most "
                f"{limit} tokens per input; shorten it, or send \"truncate\": \"end\"",
                index=i,
            )
        fitted.append(_cut(ids, limit, options.truncate, specials[i]))
        truncated.append(i)
    return fitted, tuple(truncated)


def check_total_tokens(counts: Sequence[int], options: EmbedOptions) -> None:
    """The request-wide token limit (the gateway's `--max-request-tokens`)."""
    total = sum(counts)
    if options.max_total_tokens is not None and total > options.max_total_tokens:
        raise InvalidInput(f"the inputs have {total} tokens in all, but a request may have at "
                           f"most {options.max_total_tokens}")


def _cut(ids: list[int], limit: int, side: str, special: SpecialTokens) -> list[int]:
    head, tail = ids[:special.prefix], ids[len(ids) - special.suffix:] if special.suffix else []
    content = ids[special.prefix:len(ids) - special.suffix]
    room = max(limit - len(head) - len(tail), 0)
    content = content[:room] if side == "end" else content[len(content) - room:]
    return head + content + tail
