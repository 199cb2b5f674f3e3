"""The Engine protocol, its result types, and the engine error vocabulary.

The HTTP layer talks to every engine through `Engine` only. Adapters translate their own
library's exceptions into the errors below, in one place each, so that the HTTP layer never
sees a vLLM (or other) exception type.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EngineSpec:
    """What an adapter needs to build one engine: the model and its engine arguments."""

    name: str
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int = 16384
    max_num_seqs: int = 1024
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    # Rerank: how the model scores (query, document) pairs; see `RERANK_KINDS`.
    rerank_kind: str = "auto"
    # True: relevance is the model's activation (sigmoid for one label); False: raw logits.
    rerank_activation: bool = True
    # Jinja template turning a (query, document) pair into one prompt, as vLLM's score
    # template does for LLM rerankers (messages with roles `query` and `document`).
    score_template: str | None = None
    # Config overrides applied before loading (vLLM's hf_overrides), e.g. to load a causal LM
    # as a sequence classifier over the tokens "no"/"yes".
    hf_overrides: dict[str, Any] = field(default_factory=dict)
    # Which of `OUTPUTS` to serve; empty: what the adapter recognises in the model's files.
    outputs: tuple[str, ...] = ()
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


# Engine argument names that hold credentials (hf_token, api_key, aws_secret_access_key, ...);
# `max_num_batched_tokens` or `tokenizer` do not match.
_SECRET_NAME = re.compile(
    r"(^|_)(token|key|secret|password|passwd|credentials?|auth)$", re.IGNORECASE
)


def redact_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` for a log line: credentials (by name, or a Hugging Face token's `hf_` form
    under any name) replaced by `<redacted>`, nested mappings too."""

    def one(name: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return redact_secrets(value)
        if _SECRET_NAME.search(name) or (isinstance(value, str) and value.startswith("hf_")):
            return "<redacted>"
        return value

    return {name: one(str(name), value) for name, value in values.items()}


# cross_encoder: a sequence classifier reads query and document together (one logit);
# llm: a causal LM loaded as such a classifier through hf_overrides, prompted by a template;
# embedding: cosine of separately embedded query and document; auto: whatever the model is.
RERANK_KINDS = ("auto", "cross_encoder", "embedding", "llm")


# What a model can compute, by the name requests and errors use:
# dense: one vector per text (`embed`); sparse: token id -> weight (`embed_sparse`: SPLADE,
# bge-m3's lexical weights); multivector: one vector per token (`embed_tokens`: ColBERT,
# bge-m3's colbert_vecs, or any encoder's token states); classify: label scores per text or
# text pair (`classify`); score: one relevance score per (query, document) pair (`score`).
OUTPUTS = ("dense", "sparse", "multivector", "classify", "score")


@dataclass(frozen=True)
class ModelFacts:
    """Facts about a loaded model that requests are validated against."""

    dimension: int
    max_model_len: int
    # True when `score` works (a cross-encoder or LLM reranker); False for embedding models,
    # which rerank by the cosine of `embed` vectors and have no `score`.
    scores_pairs: bool = False
    # Which of `OUTPUTS` the model computes; the methods for the others raise `InvalidInput`.
    outputs: tuple[str, ...] = ("dense",)
    # The classifier's labels in the order of `ClassBatch.scores` columns (config.json id2label).
    labels: tuple[str, ...] = ()
    # multi_label_classification: each label's own sigmoid; else softmax over the labels.
    multi_label: bool = False
    # The width of `embed_tokens` rows (0 when the model has no multivector output).
    token_dimension: int = 0
    # What runs the model, for the build-info metric: e.g. "vllm 0.32.0" on device "cpu".
    engine_version: str = ""
    device: str = ""


# What `Engine.embed` takes per prompt: a text, or token ids of the model's own vocabulary.
Prompt = str | Sequence[int]
# Reports a loading step (see `START_STEPS`) while `Engine.start` runs.
StepReporter = Callable[[str], None]
# The steps an engine's start goes through, in order; an adapter may skip some.
START_STEPS = ("resolving", "loading weights", "warming up")


def no_report(step: str) -> None:
    """The default `StepReporter`: steps go nowhere."""


# The truncation choices, here because adapters never import the gateway; every layer uses these.
TRUNCATE_CHOICES = ("none", "end", "start")


@dataclass(frozen=True)
class EmbedOptions:
    """How `Engine.embed` treats prompts longer than allowed.

    The limit is `max_tokens` when set, else the model's window. `truncate="none"` rejects a
    longer prompt (`InvalidInput` stating both counts); `"end"` keeps its first tokens and
    `"start"` its last ones, always keeping the special tokens the tokenizer adds (CLS/SEP,
    BOS/EOS), as a Hugging Face tokenizer with `truncation=True` does.
    """

    truncate: str = "none"
    max_tokens: int | None = None
    # All prompts together, as embedded (after truncation); None: no limit.
    max_total_tokens: int | None = None
    # False: the pooled vector as the model computes it, without the model's normalisation
    # (vLLM's `use_activation=False` on the embed task; TEI's `normalize: false`).
    normalize: bool = True


@dataclass(frozen=True)
class SplitLimits:
    """Bounds on `Engine.split`, applied once each text's tokens are counted and before any
    chunk is built (the costly part): every text is cut into ceil(tokens / budget) chunks at
    least, of which only the first `max_chunks_per_text` are kept."""

    max_chunks_per_text: int | None = None
    # All texts together; more is `InvalidInput`.
    max_chunks: int | None = None
    # The kept chunks' tokens plus each one's prompt overhead (query, special tokens).
    max_total_tokens: int | None = None

    def check(self, token_counts: Sequence[int], budget: int, overhead: int) -> None:
        chunks = tokens = 0
        for n in token_counts:
            kept = max(1, math.ceil(n / budget))
            if self.max_chunks_per_text is not None:
                kept = min(kept, self.max_chunks_per_text)
            chunks += kept
            tokens += min(n, kept * budget) + kept * overhead
        if self.max_chunks is not None and chunks > self.max_chunks:
            raise InvalidInput(
                f"the documents make at least {chunks} chunks of at most "
                f"{budget} tokens, but a request may have at most "
                f"{self.max_chunks} chunks"
            )
        if self.max_total_tokens is not None and tokens > self.max_total_tokens:
            raise InvalidInput(
                f"the query and documents make at least {tokens} tokens in "
                f"all, but a request may have at most {self.max_total_tokens}"
            )


@dataclass(frozen=True, kw_only=True)
class Accounting:
    """What every engine result carries beside its numbers: each prompt's token count as
    computed, the indices of the prompts that were truncated to fit, and the seconds spent
    tokenizing (part of the call's time; the rest is inference)."""

    token_counts: Sequence[int]
    truncated: tuple[int, ...] = ()
    tokenization_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))


@dataclass(frozen=True, kw_only=True)
class EmbeddingBatch(Accounting):
    """Vectors (n x dimension, float32, row i for prompt i)."""

    vectors: np.ndarray


@dataclass(frozen=True)
class SparseVector:
    """Non-zero weights of one text over the model's vocabulary: token ids ascending, each
    once, and their weights (all > 0)."""

    indices: np.ndarray  # int64
    values: np.ndarray  # float32


@dataclass(frozen=True, kw_only=True)
class SparseBatch(Accounting):
    """One `SparseVector` per prompt, in input order."""

    vectors: list[SparseVector]


@dataclass(frozen=True, kw_only=True)
class MultiVectorBatch(Accounting):
    """One float32 matrix per prompt (one row per kept token, `facts.token_dimension` wide),
    in input order."""

    matrices: list[np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ClassBatch(Accounting):
    """Label scores: n x len(facts.labels), float64, row i for input i: probabilities
    (softmax, or sigmoid per label for multi-label models) or, without activation, logits."""

    scores: np.ndarray


# What `Engine.classify` takes per input: a text, or a (text, text_pair) pair.
ClassInput = str | tuple[str, str]


@dataclass(frozen=True)
class ScoreBatch:
    """One relevance score per (query, document) pair, each pair's prompt token count, and
    the seconds spent tokenizing."""

    scores: np.ndarray
    token_counts: Sequence[int]
    tokenization_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))


@dataclass(frozen=True)
class Tokens:
    """One text as the model's tokenizer cuts it: ids, each token's own string, whether it
    is a special token, and its character span in the text (None for added special tokens)."""

    ids: list[int]
    strings: list[str]
    special: list[bool]
    offsets: list[tuple[int, int] | None]


class EngineError(Exception):
    """Base of every error an engine reports to the HTTP layer."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Which prompt of the batch caused it, when the engine knows.
        self.index = index


class InvalidInput(EngineError):
    """The prompt cannot be embedded as given (too long, bad token ids, ...): a client error."""


def require_output(facts: ModelFacts, model: str, output: str) -> None:
    """`InvalidInput` naming what the model computes, unless it computes `output`."""
    if output not in facts.outputs:
        raise InvalidInput(
            f"model '{model}' has no {output} output; it computes: {', '.join(facts.outputs)}"
        )


class EngineOverloaded(EngineError):
    """The engine refuses more work right now; the client may retry later."""


class EngineUnavailable(EngineError):
    """The engine is not loaded, has died, or is shutting down."""


class EngineFailure(EngineError):
    """The engine failed on a request it accepted; not the client's fault."""


class Pacer(Protocol):
    """Decides when background work may enter an engine (the Batch API's pacing, in
    gateway/batches/pacing.py)."""

    def slot(self, tokens: int) -> AbstractAsyncContextManager[None]:
        """Wait until one engine request of `tokens` tokens may start; held while it runs."""
        ...


# vLLM's priority for background requests (lower runs first; interactive requests are 0).
BACKGROUND_PRIORITY = 1
_background: ContextVar[Pacer | None] = ContextVar("background", default=None)


@contextlib.contextmanager
def background(pacer: Pacer) -> Iterator[None]:
    """Engine work started inside this block (by this task and the tasks it starts) is
    background work: each engine request (one per input) first waits for `pacer.slot(its
    tokens)`, then runs at `BACKGROUND_PRIORITY`. A context variable rather than an argument,
    so that the routes a batch line runs through stay the interactive ones, unchanged."""
    token = _background.set(pacer)
    try:
        yield
    finally:
        _background.reset(token)


def background_pacer() -> Pacer | None:
    """The pacer of the background work running here, or None for interactive work."""
    return _background.get()


@runtime_checkable
class Engine(Protocol):
    """One loaded model. Implementations: `adapters.vllm.VLLMEngine`, `adapters.fake.FakeEngine`.

    `embed` and `score` called inside `background(pacer)` send each input to the engine only
    once the pacer grants it a slot, and at a lower priority than other work."""

    spec: EngineSpec

    async def start(self, report: StepReporter = no_report) -> None:
        """Load the model, calling `report(step)` as each of `START_STEPS` begins: by the
        application lifespan, and again after `shutdown()` when the registry restarts an
        engine that died or hung. A model that cannot be found fails in the first step, with
        its path in the message."""

    @property
    def facts(self) -> ModelFacts:
        """Dimension and context length; valid after `start()`."""

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        """Embed each prompt (a text, or the model's own token ids taken as they are) on its
        own; rows in input order. Ids outside the vocabulary, over-long prompts (unless
        `options` allow truncation) and more than `options.max_total_tokens` tokens in all are
        `InvalidInput`, raised before any engine work. Cancelling the call aborts the work."""

    async def embed_sparse(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> SparseBatch:
        """Each prompt's sparse vector ("sparse" in `facts.outputs`): SPLADE's max-pooled
        log(1 + relu(MLM logits)), or bge-m3's relu(sparse_linear) weights, max per token id,
        without the tokenizer's special tokens. Prompts, limits and `InvalidInput` as `embed`;
        `options.normalize` does not apply."""

    async def embed_tokens(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> MultiVectorBatch:
        """Each prompt's token vectors ("multivector" in `facts.outputs`): a ColBERT head's,
        each L2-normalised unless `options.normalize` is False (bge-m3's colbert_vecs: every
        token but the first, as FlagEmbedding gives them), or a plain encoder's last hidden
        states as they are (TEI's /embed_all; `normalize` does not apply). Prompts, limits and
        `InvalidInput` as `embed`."""

    async def classify(
        self,
        inputs: Sequence[ClassInput],
        options: EmbedOptions = EmbedOptions(),
        *,
        activation: bool = True,
    ) -> ClassBatch:
        """Label scores of each text or (text, text_pair) ("classify" in `facts.outputs`),
        with the model's activation (softmax, or sigmoid when multi-label) unless
        `activation` is False (raw logits). Limits as `embed` (a pair is truncated from the
        end of its longer part under `options.truncate`, else `InvalidInput`)."""

    async def score(
        self, query: str, documents: Sequence[str], *, activation: bool | None = None
    ) -> ScoreBatch:
        """Score each (query, document) pair with a pair model (`facts.scores_pairs`).
        `activation` None means the model's configured default; False gives raw logits.
        Every pair must fit the window: `split` first."""

    async def split(
        self,
        texts: Sequence[str],
        *,
        query: str | None = None,
        max_tokens: int | None = None,
        wrap: Callable[[str], str] | None = None,
        limits: SplitLimits = SplitLimits(),
    ) -> list[list[str]]:
        """Cut each text at token boundaries into consecutive pieces that fit the model's
        window, alone (query None: as `embed` gets `wrap(piece)`, e.g. with a document prompt)
        or paired with `query` (as `score` sends it), each at most `max_tokens` tokens of its
        own when given. A text that fits is one piece. `limits` refuse (`InvalidInput`) or
        cut short a split before its chunks are built."""

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[Tokens]:
        """Each text through the model's tokenizer (TEI's and vLLM's /tokenize)."""

    async def detokenize(
        self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool = False
    ) -> list[str]:
        """Each id list back to text; an id outside the vocabulary is `InvalidInput`."""

    async def check_health(self) -> None:
        """Return once the engine has shown it can serve: a real request through it (or any
        other work completing meanwhile), not a flag that a stopped process would still show.
        Raise `EngineUnavailable` if it is dead; a hung engine never returns (the caller's
        deadline decides)."""

    async def shutdown(self) -> None:
        """Release the engine (processes, memory), killing processes that do not stop (a
        hung engine's). Safe to call twice."""
