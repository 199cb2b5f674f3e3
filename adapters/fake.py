"""A deterministic in-memory engine for tests and for measuring the gateway's own overhead.

Vectors depend only on the text (a seeded random unit vector), tokens are whitespace words
plus two special tokens around them (token ids sent by a client are taken as they are, from a
vocabulary of `vocab_size`), pair scores are word overlap, and latency and faults can be
switched on per instance: by attribute in tests, or through a JSON control file (re-read
whenever it changes) when the engine runs in a server process, so that the reliability battery
can kill, hang or poison it mid-load:

    {"latency_s": 0.05, "dead": false, "hang": false, "nan_marker": "POISON", "fail": false,
     "fail_start": false}

`start()` may be called again after `shutdown()` (a restart): it brings up a fresh engine
(not dead, not hung) unless `fail_start` is set.

With `stats_file` set, the engine writes its counters (calls, completed, aborted) there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from adapters.base import (
    Accounting,
    ClassBatch,
    ClassInput,
    EmbeddingBatch,
    EmbedOptions,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    InvalidInput,
    ModelFacts,
    MultiVectorBatch,
    Pacer,
    Prompt,
    ScoreBatch,
    SparseBatch,
    SparseVector,
    SplitLimits,
    StepReporter,
    Tokens,
    background_pacer,
    no_report,
    require_output,
)
from adapters.token_limits import (
    Encoded,
    SpecialTokens,
    check_total_tokens,
    check_vocabulary,
    cut_lengths,
    fit,
    truncation_window,
)

# The two special tokens the fake tokenizer puts around a text, like BERT's [CLS] and [SEP].
_CLS, _SEP = "[CLS]", "[SEP]"

# A fake token: what str.split() finds.
_WORD = re.compile(r"\S+")

# The labels of a fake classifier unless given.
FAKE_LABELS = ("negative", "neutral", "positive")

_CONTROLLED = ("latency_s", "dead", "hang", "nan_marker", "fail", "fail_start")


class FakeEngine:
    """An `Engine` whose behaviour is set by attributes: latency, start delay, faults.

    - `latency_s`: each `embed` call sleeps this long (and is cancellable meanwhile).
    - `dead`: the engine has died: calls in flight and new calls raise `EngineUnavailable`.
    - `hang`: the engine stops answering: `embed` and `check_health` never return.
    - `nan_marker`: inputs containing this text get a NaN vector.
    - `fail_with`: an exception `embed` raises (the control file's `fail` sets an EngineFailure).
    - `fail_start`: `start()` raises (a restart that cannot bring the engine back).
    - `keep_calls`: how many recent calls `calls` keeps for tests (0 in a soak).

    Background work (`adapters.base.background`) is paced as the vLLM adapter paces it: each
    prompt waits for its own slot, then takes `latency_s`; `background_peak` is the most
    background prompts it held at once.
    """

    def __init__(
        self,
        spec: EngineSpec | None = None,
        *,
        dimension: int = 8,
        max_model_len: int = 512,
        latency_s: float = 0.0,
        start_delay_s: float = 0.0,
        scores_pairs: bool = False,
        vocab_size: int = 1000,
        nan_marker: str | None = None,
        control_file: str | None = None,
        stats_file: str | None = None,
        keep_calls: int = 1000,
        outputs: tuple[str, ...] | None = None,
        labels: tuple[str, ...] = FAKE_LABELS,
        multi_label: bool = False,
    ) -> None:
        self.spec = spec or EngineSpec(name="fake", model="fake")
        if outputs is None:
            outputs = ("dense", "score") if scores_pairs else ("dense",)
        self._facts = ModelFacts(
            dimension=dimension,
            max_model_len=max_model_len,
            scores_pairs=scores_pairs,
            outputs=outputs,
            labels=labels if "classify" in outputs else (),
            multi_label=multi_label,
            token_dimension=dimension if "multivector" in outputs else 0,
        )
        self.latency_s = latency_s
        self.start_delay_s = start_delay_s
        self.vocab_size = vocab_size
        self.nan_marker = nan_marker
        self.fail_with: Exception | None = None  # raised by embed() when set
        self.hang = False
        self.fail_start = False
        self.starts = 0  # calls of start() that succeeded
        self._dead = asyncio.Event()
        self.started = False
        self.stopped = False
        # Each embed() or score() call's prompts, and each embed() call's options, for tests;
        # bounded so that a soak does not grow memory.
        self.calls: list[list[Prompt]] = []
        self.options: list[EmbedOptions] = []
        self._keep_calls = keep_calls
        self.call_count = 0  # calls that passed validation and started work
        self.completed = 0
        self.aborted = 0  # embed calls cancelled while in flight (client gone, timeout)
        self.background_inflight = 0
        self.background_peak = 0
        self._control_file = control_file
        self._control_mtime: float | None = None
        self._stats_file = stats_file
        self._stats_task: asyncio.Task[None] | None = None
        self._vocab: dict[str, int] = {}
        self._words: dict[int, str] = {}

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    @dead.setter
    def dead(self, value: bool) -> None:
        self._dead.set() if value else self._dead.clear()

    async def start(self, report: StepReporter = no_report) -> None:
        self._read_control()
        report("resolving")
        report("loading weights")
        await asyncio.sleep(self.start_delay_s * 0.8)
        if self.fail_start:
            raise EngineFailure("injected start failure")
        report("warming up")
        await asyncio.sleep(self.start_delay_s * 0.2)
        # A fresh engine, as a restarted engine-core process is.
        self.started, self.stopped, self.dead, self.hang = True, False, False, False
        self.starts += 1
        if self._stats_file and self._stats_task is None:
            self._stats_task = asyncio.create_task(self._read_control_forever())

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        require_output(self._facts, self.spec.name, "dense")
        tokens, counts = await self._prepare(prompts, options)
        # A text that fits keeps the vector of its own string; truncated texts and client ids
        # get the vector of the tokens embedded.
        keys = [
            p if isinstance(p, str) and i not in counts.truncated else " ".join(t)
            for i, (p, t) in enumerate(zip(prompts, tokens))
        ]
        vectors = np.stack([fake_vector(key, self._facts.dimension) for key in keys])
        if not options.normalize:  # "unnormalised": a norm that depends on the input
            vectors *= np.array([[len(t)] for t in tokens], dtype=np.float32)
        if self.nan_marker:
            poisoned = [i for i, key in enumerate(keys) if self.nan_marker in key]
            vectors[poisoned] = np.nan
        self._count("completed")
        return EmbeddingBatch(
            vectors=vectors,
            **vars(counts),
        )

    async def _prepare(
        self, prompts: Sequence[Prompt], options: EmbedOptions
    ) -> tuple[list[list[str]], Accounting]:
        """Prompts tokenized, fitted and checked as `embed` does, then the engine's work run:
        each prompt's tokens, and the accounting every result carries."""
        self._begin(prompts)
        self.options.append(options)
        tokenizing = time.perf_counter()
        limit = options.max_tokens or self._facts.max_model_len
        tokens = [
            self._tokens(p, options.truncate, limit)
            if isinstance(p, str)
            else [str(t) for t in check_vocabulary(p, self.vocab_size, index=i)]
            for i, p in enumerate(prompts)
        ]
        specials = [SpecialTokens(1, 1) if isinstance(p, str) else SpecialTokens() for p in prompts]
        tokens, truncated = fit(
            tokens,
            options,
            max_model_len=self._facts.max_model_len,
            model=self.spec.name,
            specials=specials,
        )
        check_total_tokens([len(t) for t in tokens], options)
        tokenization_s = time.perf_counter() - tokenizing
        await self._run([len(t) for t in tokens])
        counts = Accounting(
            token_counts=[len(t) for t in tokens],
            truncated=truncated,
            tokenization_s=tokenization_s,
        )
        return tokens, counts

    async def embed_sparse(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> SparseBatch:
        """Each word's id (as `tokenize` gives it) with a weight that depends on the word,
        the larger where a word repeats; the special tokens are left out."""
        require_output(self._facts, self.spec.name, "sparse")
        tokens, counts = await self._prepare(prompts, options)
        vectors = []
        for words in tokens:
            weights: dict[int, float] = {}
            for word in words:
                if word in (_CLS, _SEP):
                    continue
                token_id = self._word_id(word)
                weights[token_id] = max(weights.get(token_id, 0.0), fake_weight(word))
            ids = sorted(weights)
            vectors.append(
                SparseVector(
                    indices=np.array(ids, dtype=np.int64),
                    values=np.array([weights[i] for i in ids], dtype=np.float32),
                )
            )
        self._count("completed")
        return SparseBatch(
            vectors=vectors,
            **vars(counts),
        )

    async def embed_tokens(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> MultiVectorBatch:
        """One unit vector per token but the first (as vLLM and FlagEmbedding give bge-m3's
        colbert_vecs: without the first token, with the last), each the vector of the token's
        own string."""
        require_output(self._facts, self.spec.name, "multivector")
        tokens, counts = await self._prepare(prompts, options)
        width = self._facts.token_dimension
        matrices = [
            np.stack([fake_vector(word, width) for word in words[1:]])
            if len(words) > 1
            else np.zeros((0, width), dtype=np.float32)
            for words in tokens
        ]
        self._count("completed")
        return MultiVectorBatch(
            matrices=matrices,
            **vars(counts),
        )

    async def classify(
        self,
        inputs: Sequence[ClassInput],
        options: EmbedOptions = EmbedOptions(),
        *,
        activation: bool = True,
    ) -> ClassBatch:
        """Logits that depend only on the text (a pair: on both parts), then softmax (sigmoid
        per label when multi-label)."""
        require_output(self._facts, self.spec.name, "classify")
        texts = [i if isinstance(i, str) else f"{i[0]} {i[1]}" for i in inputs]
        _, counts = await self._prepare(texts, options)
        count = len(self._facts.labels)
        logits = (
            np.stack([4.0 * fake_vector(text, count).astype(np.float64) for text in texts])
            if texts
            else np.zeros((0, count))
        )
        if not activation:
            scores = logits
        elif self._facts.multi_label:
            scores = 1 / (1 + np.exp(-logits))
        else:
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = exp / exp.sum(axis=1, keepdims=True)
        self._count("completed")
        return ClassBatch(
            scores=scores,
            **vars(counts),
        )

    @staticmethod
    def _tokens(text: str, truncate: str, limit: int) -> list[str]:
        """The text's tokens; under truncation a long text's from a prefix (suffix) only, as
        the vLLM adapter does (`truncation_window`)."""
        if truncate != "none":
            for cut in cut_lengths(len(text), limit):
                tokens = truncation_window(text, cut, truncate, limit, fake_encode)
                if tokens is not None:
                    return tokens
        return fake_tokens(text)

    async def score(
        self, query: str, documents: Sequence[str], *, activation: bool | None = None
    ) -> ScoreBatch:
        if not self._facts.scores_pairs:
            raise InvalidInput(f"model '{self.spec.name}' is an embedding model")
        self._begin(documents)
        tokenizing = time.perf_counter()
        counts = [fake_token_count(query) + fake_token_count(d) - 1 for d in documents]
        tokenization_s = time.perf_counter() - tokenizing
        await self._run(counts)
        for i, n in enumerate(counts):
            if n > self._facts.max_model_len:
                raise InvalidInput(
                    f"input {i} has {n} tokens, but model '{self.spec.name}' accepts at most "
                    f"{self._facts.max_model_len} tokens per input",
                    index=i,
                )
        logits = np.array([fake_logit(query, d) for d in documents])
        if self.nan_marker:
            logits[[i for i, d in enumerate(documents) if self.nan_marker in d]] = np.nan
        self._count("completed")
        use_activation = self.spec.rerank_activation if activation is None else activation
        return ScoreBatch(
            scores=1 / (1 + np.exp(-logits)) if use_activation else logits,
            token_counts=counts,
            tokenization_s=tokenization_s,
        )

    async def split(
        self,
        texts: Sequence[str],
        *,
        query: str | None = None,
        max_tokens: int | None = None,
        wrap: Callable[[str], str] | None = None,
        limits: SplitLimits = SplitLimits(),
    ) -> list[list[str]]:
        if query is not None:
            overhead = fake_token_count(query) + 1
        else:
            overhead = fake_token_count(wrap("") if wrap is not None else "")
        budget = self._facts.max_model_len - overhead
        if budget < 1:
            raise InvalidInput("the query leaves no room for a document", index=0)
        budget = min(budget, max_tokens or budget)
        # Counted first, nothing kept, so that the limits refuse before anything big is built
        # (a list of a document's words costs ten times the document).
        counts = [sum(1 for _ in _WORD.finditer(text)) for text in texts]
        limits.check(counts, budget, overhead)
        pieces = []
        for text, n in zip(texts, counts):
            if n <= budget:
                pieces.append([text])
                continue
            words = text.split()
            starts = range(0, n, budget)[: limits.max_chunks_per_text]
            pieces.append([" ".join(words[i : i + budget]) for i in starts])
        return pieces

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[Tokens]:
        self._begin(texts)
        return [self._token_view(text, add_special_tokens) for text in texts]

    def _token_view(self, text: str, add_special_tokens: bool) -> Tokens:
        words = [(m.group(), (m.start(), m.end())) for m in _WORD.finditer(text)]
        ids = [self._word_id(w) for w, _ in words]
        strings = [w for w, _ in words]
        offsets: list[tuple[int, int] | None] = [span for _, span in words]
        special = [False] * len(words)
        if add_special_tokens:
            ids, strings = [0, *ids, 1], [_CLS, *strings, _SEP]
            offsets, special = [None, *offsets, None], [True, *special, True]
        return Tokens(ids=ids, strings=strings, special=special, offsets=offsets)

    def _word_id(self, word: str) -> int:
        """Ids in order of first sight (0 and 1 are the special tokens), so that detokenize
        can invert them; past the vocabulary, ids wrap (and no longer invert)."""
        if word not in self._vocab:
            self._vocab[word] = 2 + len(self._vocab) % max(self.vocab_size - 2, 1)
            self._words.setdefault(self._vocab[word], word)
        return self._vocab[word]

    async def detokenize(
        self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool = False
    ) -> list[str]:
        self._begin([list(i) for i in ids])
        texts = []
        for i, row in enumerate(ids):
            check_vocabulary(row, self.vocab_size, index=i)
            words = [
                _CLS if t == 0 else _SEP if t == 1 else self._words.get(t, f"[{t}]")
                for t in row
                if not (skip_special_tokens and t in (0, 1))
            ]
            texts.append(" ".join(words))
        return texts

    def _begin(self, prompts: Sequence[Prompt]) -> None:
        """A call arrives: the engine must be loaded; the prompts are recorded for tests."""
        self._read_control()
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        self.calls.append(list(prompts))
        if len(self.calls) > 2 * self._keep_calls:
            del self.calls[: len(self.calls) - self._keep_calls]
            del self.options[: max(len(self.options) - self._keep_calls, 0)]

    async def _run(self, token_counts: Sequence[int]) -> None:
        """The engine work of a validated call: counted, cancellable (counted as aborted)."""
        self._count("call_count")
        pacer = background_pacer()
        try:
            if pacer is None:
                await self._wait()
            else:
                await asyncio.gather(*(self._paced(pacer, n) for n in token_counts))
        except asyncio.CancelledError:
            self._count("aborted")
            raise
        if self.fail_with is not None:
            raise self.fail_with

    async def _paced(self, pacer: Pacer, tokens: int) -> None:
        async with pacer.slot(tokens):
            self.background_inflight += 1
            self.background_peak = max(self.background_peak, self.background_inflight)
            try:
                await self._wait()
            finally:
                self.background_inflight -= 1

    async def _wait(self) -> None:
        """Sleep `latency_s`, or forever when hung; end early with an error if the engine dies."""
        if self.dead:
            raise EngineUnavailable("the engine has stopped; the model cannot serve requests")
        latency = None if self.hang else self.latency_s
        if latency:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._dead.wait(), latency)
        while self.hang and not self.dead:  # a hung engine never answers, in flight or new
            await asyncio.sleep(0.05)
            self._read_control()
        if self.dead:
            raise EngineUnavailable("the engine has stopped; the model cannot serve requests")

    async def check_health(self) -> None:
        self._read_control()
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if self.dead:
            raise EngineUnavailable("the engine has stopped")
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.fail_with, (EngineUnavailable, EngineFailure)):
            raise EngineUnavailable(str(self.fail_with))

    async def shutdown(self) -> None:
        self.stopped = True
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._stats_task = None
            self._write_stats()

    # -- remote control (reliability battery) ------------------------------------------

    def _read_control(self) -> None:
        if not self._control_file:
            return
        try:
            mtime = os.stat(self._control_file).st_mtime_ns
            if mtime == self._control_mtime:
                return
            with open(self._control_file) as file:
                control = json.load(file)
        except (OSError, ValueError):
            return  # absent or half-written: keep the current behaviour
        self._control_mtime = mtime
        for key in _CONTROLLED:
            if key in control:
                value = control[key]
                if key == "fail":
                    self.fail_with = EngineFailure("injected engine failure") if value else None
                else:
                    setattr(self, key, value)

    def _count(self, counter: str) -> None:
        """One more call, completion or abort; written at once, so a test that reads the stats
        sees the engine as it is at that moment, not as it was up to a poll ago."""
        setattr(self, counter, getattr(self, counter) + 1)
        if self._stats_file:
            self._write_stats()

    async def _read_control_forever(self) -> None:
        self._write_stats()
        while True:
            self._read_control()  # also notices "dead" with no traffic
            await asyncio.sleep(0.1)

    def _write_stats(self) -> None:
        assert self._stats_file
        temporary = self._stats_file + ".tmp"
        with open(temporary, "w") as file:
            json.dump(
                {"calls": self.call_count, "completed": self.completed, "aborted": self.aborted},
                file,
            )
        os.replace(temporary, self._stats_file)


def fake_tokens(text: str) -> list[str]:
    """Whitespace words between the two special tokens a BERT tokenizer adds."""
    return [_CLS, *text.split(), _SEP]


def fake_encode(text: str) -> Encoded:
    """`fake_tokens` with character offsets and the special-token mask."""
    words = [(m.group(), m.span()) for m in _WORD.finditer(text)]
    return (
        [_CLS, *(w for w, _ in words), _SEP],
        [(0, 0), *(s for _, s in words), (0, 0)],
        [1, *(0 for _ in words), 1],
    )


def fake_token_count(text: str) -> int:
    return len(fake_tokens(text))


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """A unit float32 vector that depends only on the text (FakeEngine's vector for a text
    that fits the window)."""
    seed = int.from_bytes(
        hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little"
    )
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def fake_weight(word: str) -> float:
    """A sparse weight in (0.1, 2.1) that depends only on the word."""
    digest = hashlib.sha256(word.encode("utf-8", "surrogatepass")).digest()
    return 0.1 + 2.0 * int.from_bytes(digest[:4], "little") / 2**32


def fake_logit(query: str, document: str) -> float:
    """Share of the query's words found in the document, mapped onto [-2, 2]."""
    wanted = set(query.lower().split())
    found = wanted & set(document.lower().split())
    return 4.0 * len(found) / max(len(wanted), 1) - 2.0
