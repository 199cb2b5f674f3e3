"""Checks on prompts' token ids shared by every adapter: ids within the vocabulary, and the
length policy (reject or truncate over-long prompts, keeping the special tokens the tokenizer
added)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.base import EmbedOptions, InvalidInput

# Token ids, or the fake engine's word tokens: `fit` only measures and slices them.
_Token = TypeVar("_Token")


def check_vocabulary(ids: Sequence[int], vocab_size: int, *, index: int) -> list[int]:
    """Client-sent ids as a list, or `InvalidInput` naming the first id outside 0..vocab-1."""
    if not ids:
        raise InvalidInput(f"input {index} is an empty list of token ids", index=index)
    for token in ids:
        if not 0 <= token < vocab_size:
            raise InvalidInput(
                f"input {index}: token id {token} is outside the model's "
                f"vocabulary (0 to {vocab_size - 1})",
                index=index,
            )
    return list(ids)


@dataclass(frozen=True)
class SpecialTokens:
    """How many special tokens the tokenizer puts before and after a text's own tokens
    (BERT: [CLS] ... [SEP] is 1 and 1; Qwen3-Embedding: ... <|endoftext|> is 0 and 1)."""

    prefix: int = 0
    suffix: int = 0

    @classmethod
    def of(cls, with_special: Sequence[int], plain: Sequence[int]) -> SpecialTokens:
        """Find `plain` (a probe text without special tokens) inside `with_special` (the same
        text with them)."""
        n = len(plain)
        for start in range(len(with_special) - n + 1):
            if list(with_special[start : start + n]) == list(plain):
                return cls(start, len(with_special) - start - n)
        return cls()  # the tokenizer rewrote the probe; truncate without protecting anything


def fit(
    token_ids: Sequence[list[_Token]],
    options: EmbedOptions,
    *,
    max_model_len: int,
    model: str,
    specials: Sequence[SpecialTokens],
) -> tuple[list[list[_Token]], tuple[int, ...]]:
    """Each prompt's ids within the limit, and the indices of those that were truncated.

    `specials[i]` says what prompt i's tokenizer added (nothing for ids a client sent)."""
    if options.max_tokens is not None and options.max_tokens > max_model_len:
        raise InvalidInput(
            f"the requested token limit {options.max_tokens} is larger than "
            f"model '{model}''s window of {max_model_len} tokens"
        )
    limit = options.max_tokens or max_model_len
    fitted: list[list[_Token]] = []
    truncated: list[int] = []
    for i, ids in enumerate(token_ids):
        if len(ids) <= limit:
            fitted.append(ids)
            continue
        if options.truncate == "none":
            raise InvalidInput(
                f"input {i} has {len(ids)} tokens, but model '{model}' accepts at most "
                f'{limit} tokens per input; shorten it, or send "truncate": "end"',
                index=i,
            )
        fitted.append(_cut(ids, limit, options.truncate, specials[i]))
        truncated.append(i)
    return fitted, tuple(truncated)


def check_total_tokens(counts: Sequence[int], options: EmbedOptions) -> None:
    """The request-wide token limit (the gateway's `--max-request-tokens`)."""
    total = sum(counts)
    if options.max_total_tokens is not None and total > options.max_total_tokens:
        raise InvalidInput(
            f"the inputs have {total} tokens in all, but a request may have at "
            f"most {options.max_total_tokens}"
        )


def _cut(ids: list[_Token], limit: int, side: str, special: SpecialTokens) -> list[_Token]:
    head, tail = ids[: special.prefix], ids[len(ids) - special.suffix :] if special.suffix else []
    content = ids[special.prefix : len(ids) - special.suffix]
    room = max(limit - len(head) - len(tail), 0)
    content = content[:room] if side == "end" else content[len(content) - room :]
    return head + content + tail


# -- long texts under truncation: tokenize a prefix (or suffix), not the whole text ---------

# Tokens whose characters lie within this distance of a cut are not trusted: a word or
# pre-tokenizer piece cut in two tokenizes differently from the whole. Pre-tokenizers split
# on whitespace and punctuation and WordPiece gives up on words past 100 characters, so no
# token's identity depends on characters this far away.
CUT_MARGIN_CHARS = 256
# Texts up to this many characters per token of the limit are always tokenized whole.
FIRST_CUT_CHARS_PER_TOKEN = 8

# (ids, character offsets, special-token mask) of one text, special tokens included.
Encoded = tuple[Sequence[Any], Sequence[tuple[int, int]], Sequence[int]]


def cut_lengths(length: int, limit: int) -> Iterator[int]:
    """The prefix (or suffix) lengths to try for a text of `length` characters truncated to
    `limit` tokens: doubling from a few characters per token, then the whole text. Empty
    when the text is short enough to tokenize whole at once."""
    size = FIRST_CUT_CHARS_PER_TOKEN * (limit + 1) + 2 * CUT_MARGIN_CHARS
    while size < length:
        yield size
        size *= 2


def truncation_window(
    text: str, cut: int, side: str, limit: int, encode: Callable[[str], Encoded]
) -> list[Any] | None:
    """Token ids of `text` that truncate to exactly what the whole text's ids truncate to
    (`_cut` keeps `limit` tokens), from the first (`end`) or last (`start`) `cut` characters
    only; None when that part does not hold enough trustworthy tokens (try a longer cut).

    Cut-tokenize-check: the part's tokens that end at least CUT_MARGIN_CHARS before the cut
    are the whole text's first tokens (same characters, same pre-token pieces); when there
    are more than `limit` of them, the special tokens around `limit + 1` of them make a
    sequence that is over the limit and truncates as the whole text would."""
    part = text[:cut] if side == "end" else text[len(text) - cut :]
    ids, offsets, special = encode(part)
    content = [i for i, is_special in enumerate(special) if not is_special]
    if not content:
        return None
    head, tail = list(ids[: content[0]]), list(ids[content[-1] + 1 :])
    if side == "end":
        trusted = [ids[i] for i in content if offsets[i][1] <= cut - CUT_MARGIN_CHARS]
        kept = trusted[: limit + 1]
    else:
        trusted = [ids[i] for i in content if offsets[i][0] >= CUT_MARGIN_CHARS]
        kept = trusted[len(trusted) - limit - 1 :]
    if len(trusted) <= limit:
        return None
    return head + kept + tail


# -- long texts counted and cut in windows: never a whole text's tokens in memory at once ---

# Characters per window (the margins on either side come on top): the tokenizer wrapper's
# answer for one costs about 150 bytes per character (0.6 MB; measured on MiniLM's), and
# larger windows are no faster.
WINDOW_CHARS = 4096

# The character spans of a text's tokens (no special tokens), in order.
Spans = Callable[[str], Sequence[tuple[int, int]]]


def token_starts(text: str, spans: Spans, window: int = WINDOW_CHARS) -> Iterator[list[int]]:
    """Where each of `text`'s tokens begins (the whole text's tokens, as `spans(text)` finds
    them), a batch per window of about `window` characters: counting or cutting a long text
    then holds one window's tokens, not the whole text's (a tokenizer's offsets cost about a
    hundred bytes per token).

    A window's tokens within CUT_MARGIN_CHARS of either of its cuts are not trusted, as in
    `truncation_window`; the next window starts that far before the first untrusted token,
    so every token is taken from a window where it lies clear of both cuts. A token longer
    than the window (WordPiece's [UNK] for a huge word) widens it until it fits."""
    begin, counted, width = 0, 0, window
    while True:
        end = min(len(text), begin + width)
        found = spans(text[begin:end])
        first = counted - begin  # tokens starting before this were taken from earlier windows
        if end == len(text):
            yield [begin + s for s, _ in found if s >= first]
            return
        edge = end - begin - CUT_MARGIN_CHARS
        cut = next((s for s, e in found if s >= first and e > edge), edge)
        if cut <= first:
            width *= 2
            continue
        yield [begin + s for s, _ in found if first <= s < cut]
        counted, width = begin + cut, window
        begin = max(0, counted - CUT_MARGIN_CHARS)
