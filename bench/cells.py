"""What is measured: the cell matrices, the texts, and the request bodies."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from harness.load import Body

MODEL_NAME = "all-MiniLM-L6-v2"
WORDS = {"short": 12, "long": 200}
CONCURRENCY = (1, 8, 32)
INPUTS = (1, 16, 64)
FORMATS = ("float", "base64")
# Distinct texts per length; a request's inputs are a window of this pool, so no request
# repeats a text (de-duplication must not flatter the gateway) and the cache is off.
POOL = 4096


@dataclass(frozen=True)
class Cell:
    length: str
    concurrency: int
    inputs: int
    fmt: str

    @property
    def label(self) -> str:
        return f"{self.length} c={self.concurrency} n={self.inputs} {self.fmt}"

    def to_dict(self) -> dict:
        return asdict(self)


def full_matrix() -> list[Cell]:
    return [Cell(*p) for p in itertools.product(WORDS, CONCURRENCY, INPUTS, FORMATS)]


def default_matrix() -> list[Cell]:
    """Every axis moves at least once, and every cell a target (bench/report.py) names is here:
    single inputs at c=1 (latency) and c >= 8. Three servers in about 12 minutes on 2 CPU
    cores."""
    return [
        Cell("short", 1, 1, "float"),
        Cell("short", 8, 1, "float"),
        Cell("short", 32, 1, "float"),
        Cell("short", 8, 16, "float"),
        Cell("short", 8, 64, "base64"),
        Cell("long", 1, 1, "float"),
        Cell("long", 8, 1, "float"),
        Cell("long", 8, 16, "base64"),
    ]


def quick_matrix() -> list[Cell]:
    return [
        Cell("short", 1, 1, "float"),
        Cell("short", 32, 1, "float"),
        Cell("short", 8, 64, "base64"),
        Cell("long", 8, 16, "float"),
    ]


def make_texts(model_path: str, length: str, count: int = POOL, seed: int = 0) -> list[str]:
    """`count` distinct texts of WORDS[length] whole words from the model's own vocabulary."""
    vocab = [
        w
        for w in Path(model_path, "vocab.txt").read_text().split("\n")
        if w.isalpha() and w.islower() and len(w) >= 3
    ]
    rng = random.Random(f"{seed}-{length}")
    return [" ".join(rng.choices(vocab, k=WORDS[length])) for _ in range(count)]


def embedding_bodies(
    cell: Cell, texts: Sequence[str], tokens: Sequence[int], count: int = 256
) -> list[Body]:
    bodies = []
    for i in range(count):
        start = (i * cell.inputs) % len(texts)
        idx = [(start + j) % len(texts) for j in range(cell.inputs)]
        body = {"model": MODEL_NAME, "input": [texts[k] for k in idx], "encoding_format": cell.fmt}
        bodies.append(Body(orjson.dumps(body), cell.inputs, sum(tokens[k] for k in idx)))
    return bodies


def rerank_bodies(
    texts: Sequence[str], tokens: Sequence[int], documents: int = 32, count: int = 64
) -> list[Body]:
    """The Cohere/Jina rerank body: a query and `documents` documents."""
    bodies = []
    for i in range(count):
        start = (i * (documents + 1)) % len(texts)
        idx = [(start + j) % len(texts) for j in range(documents + 1)]
        body = {
            "model": MODEL_NAME,
            "query": texts[idx[0]],
            "documents": [texts[k] for k in idx[1:]],
            "top_n": documents,
        }
        bodies.append(Body(orjson.dumps(body), documents, sum(tokens[k] for k in idx)))
    return bodies
