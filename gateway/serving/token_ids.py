"""Token-id inputs read as OpenAI's cl100k_base ids, decoded back to text with tiktoken.

LangChain's `OpenAIEmbeddings` (default settings) and other OpenAI clients send cl100k_base ids
instead of text. Decoding them and letting the served model tokenize the text again gives the
vectors of the original strings.

The encoding is built from the rank file in an operator-given folder, never through
`tiktoken.get_encoding`, which downloads the file when it is missing: here a missing file is a
quick 400, not a hang on the network.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import APIError, invalid

log = logging.getLogger(__name__)

# tiktoken caches cl100k_base under the sha1 of its download address; accept the plain name too.
FILE_NAMES = ("9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "cl100k_base.tiktoken")
SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# From tiktoken_ext/openai_public.py; the pattern only matters for encoding, not decoding.
PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
    r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ORDINARY_TOKENS = 100256  # ids 0..100255 are byte sequences; 100256 is unused
# Above this many ids a decode (about 0.2 ms per thousand) leaves the event loop for a thread,
# this many ids per thread call, so that an abandoned request stops decoding at the next call.
_DECODE_INLINE_MAX = 16384
# How long a failed load of the rank file is answered from memory before it is tried again.
_RETRY_LOAD_S = 30.0
SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def default_folder() -> Path:
    """Where tiktoken itself caches files when no folder is configured."""
    return Path(tempfile.gettempdir()) / "data-gym-cache"


class Cl100kDecoder:
    """Decodes cl100k_base ids; loads the rank file on first use and keeps it."""

    def __init__(self, folder: str | None = None) -> None:
        self.folder = Path(folder) if folder else default_folder()
        self._encoding: Any = None
        self._sizes: np.ndarray | None = None  # bytes each id decodes to
        self._lock = threading.Lock()
        # A failed load's error and when it happened: answered again for _RETRY_LOAD_S rather
        # than reading and hashing the 1.7 MB file on every request.
        self._failure: tuple[float, APIError] | None = None

    async def decoded_sizes(self, inputs: Sequence[Sequence[int]]) -> list[int]:
        """The bytes each id list decodes to (which bound its characters), from a table of
        each token's length, without decoding; or a 400 naming the first id cl100k_base does
        not have. `longest` ids each could make at most `longest` times as many."""
        await self._loaded()
        assert self._sizes is not None
        sizes = self._sizes

        def measure() -> list[int]:
            _check_ids(inputs)
            return [
                int(sizes[np.asarray(ids, dtype=np.int64)].sum()) if ids else 0 for ids in inputs
            ]

        if sum(map(len, inputs)) <= _DECODE_INLINE_MAX:
            return measure()
        return await asyncio.to_thread(measure)

    @property
    def longest(self) -> int:
        """The longest token's bytes (known once loaded)."""
        return int(self._sizes.max()) if self._sizes is not None else 0

    async def decode(self, inputs: Sequence[Sequence[int]]) -> list[str]:
        """Each id list as text, or a 400 naming the first id cl100k_base does not have.
        Large work runs in threads, _DECODE_INLINE_MAX ids per call."""
        encoding = await self._loaded()
        if sum(map(len, inputs)) <= _DECODE_INLINE_MAX:
            return _decode(encoding, inputs)
        await asyncio.to_thread(_check_ids, inputs)
        parts: list[list[bytes]] = [[] for _ in inputs]
        for batch in _batches(inputs, _DECODE_INLINE_MAX):
            decoded = await asyncio.to_thread(_decode_bytes, encoding, batch)
            for i, data in decoded:
                parts[i].append(data)
        # errors="replace": a client's chunk boundary may split a multi-byte character; the
        # bytes are joined first, so this decode's own slices never do.
        return await asyncio.to_thread(
            lambda: [b"".join(p).decode("utf-8", errors="replace") for p in parts]
        )

    async def _loaded(self) -> Any:
        return self._encoding or await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        with self._lock:
            if self._encoding is None:
                if self._failure is not None and time.monotonic() < self._failure[0]:
                    raise self._failure[1]
                try:
                    self._encoding, self._sizes = _read_encoding(self._find_file())
                except APIError as exc:
                    self._failure = (time.monotonic() + _RETRY_LOAD_S, exc)
                    raise
                self._failure = None
            return self._encoding

    def _find_file(self) -> Path:
        for name in FILE_NAMES:
            if (self.folder / name).is_file():
                return self.folder / name
        # The folder is the server's business: named in the log, never to the client.
        log.error("cl100k_base is not in %s (looked for %s)", self.folder, " or ".join(FILE_NAMES))
        raise invalid(
            "token-id inputs are read as cl100k_base ids, but the tiktoken file for "
            "cl100k_base is not in the configured folder; the operator can set "
            "--tiktoken-cache-dir or TIKTOKEN_CACHE_DIR to a folder holding it (the server "
            "log names the folder looked in), or send the text instead of token ids",
            param="input",
        )


def _decode(encoding: Any, inputs: Sequence[Sequence[int]]) -> list[str]:
    _check_ids(inputs)
    # errors="replace": a client's chunk boundary may split a multi-byte character.
    return [encoding.decode(list(ids), errors="replace") for ids in inputs]


def _decode_bytes(encoding: Any, batch: list[tuple[int, Sequence[int]]]) -> list[tuple[int, bytes]]:
    return [(i, encoding.decode_bytes(ids)) for i, ids in batch]


def _batches(
    inputs: Sequence[Sequence[int]], most: int
) -> Iterator[list[tuple[int, Sequence[int]]]]:
    """(input index, slice of its ids) pairs, about `most` ids per batch."""
    batch: list[tuple[int, Sequence[int]]] = []
    size = 0
    for i, ids in enumerate(inputs):
        for start in range(0, max(len(ids), 1), most):
            piece = ids[start : start + most]
            batch.append((i, piece))
            size += len(piece)
            if size >= most:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _read_encoding(path: Path) -> tuple[Any, np.ndarray]:
    import tiktoken

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHA256:
        log.error("the cl100k_base file %s is damaged (its sha256 is not the published one)", path)
        raise invalid(
            "the server's cl100k_base file is damaged (its sha256 is not the published "
            "one); token-id inputs cannot be decoded",
            param="input",
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    sizes = np.zeros(max(SPECIAL_TOKENS.values()) + 1, dtype=np.int64)
    for token, rank in ranks.items():
        sizes[rank] = len(token)
    for name, rank in SPECIAL_TOKENS.items():
        sizes[rank] = len(name.encode())
    encoding = tiktoken.Encoding(
        "cl100k_base", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKENS
    )
    return encoding, sizes


def _check_ids(inputs: Sequence[Sequence[int]]) -> None:
    ordinary = ORDINARY_TOKENS
    flat = list(itertools.chain.from_iterable(inputs))
    if not flat or (min(flat) >= 0 and max(flat) < ordinary):
        return  # the common case, checked at C speed
    specials = set(SPECIAL_TOKENS.values())
    for i, ids in enumerate(inputs):
        for token in ids:
            if not 0 <= token < ordinary and token not in specials:
                raise invalid(
                    f"input {i}: token id {token} is not a cl100k_base token id "
                    f"(those are 0 to {ordinary - 1} and the special tokens "
                    f"{sorted(specials)})",
                    param="input",
                )
