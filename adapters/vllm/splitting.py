"""Documents cut at token boundaries into pieces whose prompts fit the model's window, as
`Engine.split` promises; counted a window at a time so that a refusal costs little."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import InvalidInput, SplitLimits
from adapters.token_limits import WINDOW_CHARS, Spans, token_starts
from adapters.vllm.tokenizing import stop_if_abandoned, unless_abandoned


@dataclass(frozen=True)
class SplitRequest:
    """`Engine.split`'s arguments: the documents, the query each piece is paired with (None:
    the piece is embedded, as `wrap(piece)` when a wrap is given), a cap on a piece's own
    tokens, and the request's chunk and token limits."""

    texts: Sequence[str]
    query: str | None = None
    max_tokens: int | None = None
    wrap: Callable[[str], str] | None = None
    limits: SplitLimits = SplitLimits()

    @property
    def size(self) -> int:
        """Characters of tokenizer work: decides whether it runs on the event loop."""
        return sum(len(t) for t in self.texts) + len(self.query or "")


@dataclass(frozen=True)
class Splitter:
    """What splitting needs of a loaded model: its tokenizer, window and prompt shape."""

    model: str
    max_model_len: int
    tokenizer: Any
    # The Rust batch encoder (special tokens included), or None to count with the tokenizer.
    encode_batch: Callable[[list[str]], list[list[int]]] | None
    special_count: int  # how many special tokens a text's encoding adds
    pair_prompt: Callable[[str, str], tuple[list[int], list[int] | None]]
    # A (query, document) prompt is the tokenizer's pair encoding: no template around it.
    plain_pairs: bool

    def split_now(
        self, request: SplitRequest, cancel: threading.Event | None = None
    ) -> list[list[str]]:
        texts, query, wrap, limits = request.texts, request.query, request.wrap, request.limits
        tok, limit = self.tokenizer, self.max_model_len
        if query is None:

            def prompt_length(piece: str) -> int:
                text = wrap(piece) if wrap is not None else piece
                return len(tok(text, add_special_tokens=True)["input_ids"])
        else:

            def prompt_length(piece: str) -> int:
                return len(self.pair_prompt(query, piece)[0])

        # What the prompt adds around a document (special tokens, query, template), measured
        # on a one-token probe because an empty document is not a pair to every tokenizer.
        overhead = prompt_length("x") - len(tok("x", add_special_tokens=False)["input_ids"])
        budget = limit - overhead
        if budget < 1:
            raise InvalidInput(
                f"the query takes {overhead} of model '{self.model}''s "
                f"{limit} tokens and leaves no room for a document",
                index=0,
            )
        if request.max_tokens is not None:
            budget = min(budget, request.max_tokens)

        def fits(piece: str, size: int) -> bool:
            return size <= budget and prompt_length(piece) <= limit

        def spans(part: str) -> list[tuple[int, int]]:
            encoded = unless_abandoned(
                cancel, tok, part, add_special_tokens=False, return_offsets_mapping=True
            )
            offsets: list[tuple[int, int]] = encoded["offset_mapping"]
            return offsets

        # Every document's tokens counted first, a window at a time (nothing kept), so that the
        # chunk and token limits refuse a request before anything big is built: offsets for a
        # whole document cost about a hundred bytes per token.
        counts = self._count_tokens(texts, spans, cancel)
        limits.check(counts, budget, overhead)
        # Where the prompt is the document's tokens plus a fixed overhead (no template text
        # around it to merge with, a pair encoded as two sequences), a document within the
        # budget fits as it is: no second tokenization to prove it.
        exact = wrap is None and (query is None or self.plain_pairs)
        return [
            [text]
            if exact and n <= budget
            else self._split_one(text, n, spans, budget, fits, limits.max_chunks_per_text, cancel)
            for text, n in zip(texts, counts)
        ]

    def _count_tokens(
        self, texts: Sequence[str], spans: Spans, cancel: threading.Event | None
    ) -> list[int]:
        """Each text's token count without special tokens. Texts of one window are counted in
        one batched call (the Rust encoder's; the special tokens it adds are the same for every
        text), the rest a window at a time (token_starts)."""
        counts = [0] * len(texts)
        short = [i for i, text in enumerate(texts) if len(text) <= WINDOW_CHARS]
        if self.encode_batch is not None and short:
            stop_if_abandoned(cancel)
            specials = self.special_count
            for i, ids in zip(short, self.encode_batch([texts[i] for i in short])):
                counts[i] = len(ids) - specials
        else:
            short = []
        for i in set(range(len(texts))) - set(short):
            counts[i] = sum(map(len, token_starts(texts[i], spans)))
        return counts

    def _split_one(
        self,
        text: str,
        n: int,
        spans: Spans,
        budget: int,
        fits: Callable[[str, int], bool],
        max_pieces: int | None,
        cancel: threading.Event | None,
    ) -> list[str]:
        """`text` (of `n` tokens) cut into pieces of at most `budget` tokens that fit."""
        if fits(text, n):
            return [text]
        # Where each token begins (8 bytes a token), up to the last one a kept piece can reach:
        # a piece holds at most `budget` tokens.
        reach = n if max_pieces is None else min(n, max_pieces * budget + 1)
        starts = array("q")
        for batch in token_starts(text, spans):
            starts.extend(batch)
            if len(starts) >= reach:
                break
        pieces: list[str] = []
        start = 0
        while start < n and (max_pieces is None or len(pieces) < max_pieces):
            stop_if_abandoned(cancel)
            end = min(start + budget, n)
            while True:
                # Cut where the next piece's first token begins, so no character is lost;
                # a piece re-tokenizes differently at its edges and inside a prompt, hence
                # the check on the real prompt.
                piece = text[starts[start] : starts[end] if end < n else len(text)]
                size = len(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
                if fits(piece, size) or end - start <= 1:
                    break
                end -= max(1, size - budget, (end - start) // 8)
            pieces.append(piece)
            start = end
        return pieces
