"""The vLLM engine: one in-process `AsyncLLM` with the pooling runner per model.

vllm is imported lazily (inside methods) so that the HTTP layer and the fake engine work where
vllm is not installed. vLLM's exceptions are translated to the engine vocabulary of
`adapters.base` in `_translate`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from adapters.base import (
    BACKGROUND_PRIORITY,
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
    Prompt,
    ScoreBatch,
    SparseBatch,
    SparseVector,
    SplitLimits,
    StepReporter,
    Tokens,
    background_pacer,
    no_report,
    redact_secrets,
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
from adapters.vllm.arguments import check_model_source, engine_arguments
from adapters.vllm.recognition import (
    BGE_M3,
    CLASSIFIER,
    COLBERT,
    Recognition,
    labels_of,
    plan_outputs,
    read_folder,
    recognise,
    task_of,
)
from adapters.vllm.sparse import lexical_weights, vocabulary_entries
from adapters.vllm.splitting import SplitRequest, Splitter
from adapters.vllm.tokenizing import (
    GROUP_CHARS,
    INLINE_CHARS,
    off_loop,
    rust_batch_encoder,
    stop_if_abandoned,
    unless_abandoned,
)

log = logging.getLogger(__name__)
# An engine request's prompt, as AsyncLLM.encode takes it: {"prompt_token_ids": ids}.
_Prompt = dict[str, list[int]]
# The special tokens FlagEmbedding leaves out of bge-m3's lexical weights.
_UNUSED_SPECIALS = ("cls_token", "eos_token", "pad_token", "unk_token")


@dataclass(frozen=True)
class _Fitted:
    """Prompts as token ids within the limits, before any engine work."""

    token_ids: list[list[int]]
    truncated: tuple[int, ...]
    tokenization_s: float

    @property
    def token_counts(self) -> list[int]:
        return [len(ids) for ids in self.token_ids]


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
        # What the model's files showed, and what bge-m3's lexical weights leave out.
        self._recognition = Recognition()
        self._bos: int | None = None
        self._eos: int | None = None
        self._unused: frozenset[int] = frozenset()
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
        self._recognition = await asyncio.to_thread(
            lambda: recognise(read_folder(self.spec.model), self.spec)
        )
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
        tasks = await self._llm.get_supported_tasks()
        scores_pairs = _scores_pairs(self.spec, tasks, self._recognition)
        outputs = plan_outputs(self._recognition, tasks, self.spec, scores_pairs=scores_pairs)
        if not outputs:
            raise ValueError(
                f"model '{self.spec.name}' computes none of the gateway's outputs; "
                f"its engine supports the pooling tasks {list(tasks)}"
            )
        self._note_tokens(model_config.hf_config)
        labels, multi_label = (
            labels_of(model_config.hf_config.to_dict()) if "classify" in outputs else ((), False)
        )
        self._use_sep_token = bool(getattr(model_config, "use_sep_token", True))
        facts = ModelFacts(
            dimension=0,
            max_model_len=max_len,
            scores_pairs=scores_pairs,
            outputs=outputs,
            labels=labels,
            multi_label=multi_label,
        )
        self._facts = facts
        # One real request per output warms the engine up before /ready says yes, and finds
        # the vectors' widths (a projection head may differ from hidden_size).
        report("warming up")
        dimension, token_dimension = await self._warm_up(outputs)
        version, device = _build_facts()
        self._facts = replace(
            facts,
            dimension=dimension,
            token_dimension=token_dimension,
            engine_version=version,
            device=device,
        )
        self._probe = self._probe_request(outputs[0])
        log.info(
            "engine %s ready: outputs=%s dimension=%d token_dimension=%d max_model_len=%d",
            self.spec.name,
            ",".join(outputs),
            dimension,
            token_dimension,
            max_len,
        )

    def _note_tokens(self, hf_config: Any) -> None:
        """The ids bge-m3's lexical weights are aligned by (vLLM drops BOS's and EOS's
        weights) and the special tokens they leave out."""
        self._bos = getattr(hf_config, "bos_token_id", None)
        self._eos = getattr(hf_config, "eos_token_id", None)
        tok = self._tokenizer
        named = tok.special_tokens_map
        self._unused = frozenset(
            int(tok.convert_tokens_to_ids(named[name]))
            for name in _UNUSED_SPECIALS
            if name in named
        )

    async def _warm_up(self, outputs: Sequence[str]) -> tuple[int, int]:
        """One request per output; (dense width, token-vector width), 0 where absent."""
        dimension = token_dimension = 0
        if "score" in outputs:
            await self.score("warm-up", ["warm-up"])
        if "dense" in outputs:
            dimension = int((await self.embed(["warm-up"])).vectors.shape[1])
        if "sparse" in outputs:
            await self.embed_sparse(["warm-up"])
        if "multivector" in outputs:
            token_dimension = int((await self.embed_tokens(["warm-up"])).matrices[0].shape[1])
        if "classify" in outputs:
            width = (await self.classify(["warm-up"])).scores.shape[1]
            if width != len(self.facts.labels):
                raise ValueError(
                    f"model '{self.spec.name}' gives {width} label scores, but its config "
                    f"names {len(self.facts.labels)} labels"
                )
        return dimension, token_dimension

    def _probe_request(self, output: str) -> tuple[_Prompt, Any]:
        """The health probe's engine request: one short input for the model's first output."""
        if output in ("score", "classify"):
            ids, type_ids = self._pair_prompt("a", "a")
            return {"prompt_token_ids": ids}, self._params("classify", True, type_ids)
        params = {
            "dense": self._embed_params,
            "sparse": self._sparse_params(),
            "multivector": self._token_params(True),
        }[output]
        return {"prompt_token_ids": self._tokenize_now(["a"])[0]}, params

    def _build(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        # What recognition found, under what the configuration says.
        overrides = {**self._recognition.hf_overrides, **self.spec.hf_overrides}
        spec = replace(self.spec, hf_overrides=overrides)
        args = engine_arguments(spec, on_cpu=current_platform.is_cpu())
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
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if self._facts is not None and "dense" not in self._facts.outputs:
            if self._facts.scores_pairs:
                raise InvalidInput(
                    f"model '{self.spec.name}' is a reranker; it scores "
                    "(query, document) pairs and has no embeddings"
                )
            require_output(self._facts, self.spec.name, "dense")
        fitted = await self._fit(prompts, options)
        params = self._embed_params if options.normalize else self._raw_embed_params
        outputs = await self._pool_each(fitted.token_ids, params)
        vectors = np.stack(outputs).astype(np.float32, copy=False)
        return EmbeddingBatch(
            vectors=vectors,
            token_counts=fitted.token_counts,
            truncated=fitted.truncated,
            tokenization_s=fitted.tokenization_s,
        )

    async def _fit(self, prompts: Sequence[Prompt], options: EmbedOptions) -> _Fitted:
        """Prompts as token ids within the per-input and request-wide limits, or
        `InvalidInput` before any engine work."""
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
        return _Fitted(token_ids, truncated, time.perf_counter() - tokenizing)

    async def _pool_each(
        self, token_ids: Sequence[list[int]], params: Any, own_params: Sequence[Any] = ()
    ) -> list[npt.NDArray[np.floating[Any]]]:
        """One engine request per input, all in flight at once, so that vLLM's continuous
        batching mixes them with other requests' inputs; `own_params[i]`, where given and not
        None, replaces `params` for input i (a pair's, which carry its segment ids)."""
        request_id = uuid.uuid4().hex
        return list(
            await asyncio.gather(
                *(
                    self._pool(
                        {"prompt_token_ids": ids},
                        own_params[i]
                        if i < len(own_params) and own_params[i] is not None
                        else params,
                        f"{request_id}-{i}",
                    )
                    for i, ids in enumerate(token_ids)
                )
            )
        )

    async def _token_ids(
        self, prompts: Sequence[Prompt], options: EmbedOptions
    ) -> tuple[list[list[int]], list[SpecialTokens]]:
        """Texts tokenized (with special tokens) and client ids checked against the vocabulary.
        Under truncation a long text is tokenized only as far as its kept tokens need."""
        texts = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
        limit = options.max_tokens or self.facts.max_model_len
        tokenized = await off_loop(
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

    async def embed_sparse(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> SparseBatch:
        self._require("sparse")
        fitted = await self._fit(prompts, options)
        outputs = await self._pool_each(fitted.token_ids, self._sparse_params())
        vectors: list[SparseVector]
        if self._recognition.kind == BGE_M3:
            vectors = [
                lexical_weights(ids, out, bos=self._bos, eos=self._eos, unused=self._unused)
                for ids, out in zip(fitted.token_ids, outputs)
            ]
        else:
            vectors = [vocabulary_entries(out) for out in outputs]
        return SparseBatch(
            vectors=vectors,
            token_counts=fitted.token_counts,
            truncated=fitted.truncated,
            tokenization_s=fitted.tokenization_s,
        )

    def _sparse_params(self) -> Any:
        # SPLADE's pooler is its whole computation; bge-m3's activation is its ReLU.
        return self._params(task_of(self._recognition.kind, "sparse") or "embed")

    async def embed_tokens(
        self, prompts: Sequence[Prompt], options: EmbedOptions = EmbedOptions()
    ) -> MultiVectorBatch:
        self._require("multivector")
        fitted = await self._fit(prompts, options)
        outputs = await self._pool_each(fitted.token_ids, self._token_params(options.normalize))
        return MultiVectorBatch(
            matrices=[np.asarray(out, dtype=np.float32) for out in outputs],
            token_counts=fitted.token_counts,
            truncated=fitted.truncated,
            tokenization_s=fitted.tokenization_s,
        )

    def _token_params(self, normalize: bool) -> Any:
        # ColBERT heads (bge-m3's colbert_linear included) L2-normalise each token's vector,
        # as their libraries do; other encoders give their last hidden states as they are
        # (TEI's /embed_all), which is vLLM's token_embed without its normalisation.
        late_interaction = self._recognition.kind in (BGE_M3, COLBERT)
        return self._params("token_embed", use_activation=late_interaction and normalize)

    async def classify(
        self,
        inputs: Sequence[ClassInput],
        options: EmbedOptions = EmbedOptions(),
        *,
        activation: bool = True,
    ) -> ClassBatch:
        self._require("classify")
        # Pairs first, each within the limit as a pair can be; then every input goes through
        # `embed`'s limits, a pair as its token ids, so that errors name the input's index.
        began = time.perf_counter()
        pairs = {i: item for i, item in enumerate(inputs) if not isinstance(item, str)}
        encoded = await off_loop(
            sum(len(a) + len(b) for a, b in pairs.values()),
            lambda cancel: {
                i: unless_abandoned(cancel, self._fitted_pair, a, b, options)
                for i, (a, b) in pairs.items()
            },
        )
        pairing_s = time.perf_counter() - began
        prompts: list[Prompt] = [
            item if isinstance(item, str) else encoded[i][0] for i, item in enumerate(inputs)
        ]
        fitted = await self._fit(prompts, options)
        own_params = [
            self._params("classify", activation, encoded[i][1])
            if i in encoded and encoded[i][1] is not None
            else None
            for i in range(len(inputs))
        ]
        outputs = await self._pool_each(
            fitted.token_ids, self._params("classify", activation), own_params
        )
        cut = {i for i, (_, _, was_cut) in encoded.items() if was_cut}
        return ClassBatch(
            scores=np.stack([np.ravel(out) for out in outputs]).astype(np.float64),
            token_counts=fitted.token_counts,
            truncated=tuple(sorted(cut.union(fitted.truncated))),
            tokenization_s=pairing_s + fitted.tokenization_s,
        )

    def _fitted_pair(
        self, text: str, text_pair: str, options: EmbedOptions
    ) -> tuple[list[int], list[int] | None, bool]:
        """A (text, text_pair) input as `_pair_prompt` builds a scored pair, cut from the end
        of its longer part when it is too long and `options` allow truncation: ids, segment
        ids, and whether it was cut."""
        ids, segments = self._pair_prompt(text, text_pair)
        limit = options.max_tokens or self.facts.max_model_len
        if len(ids) <= limit or options.truncate == "none" or not self._use_sep_token:
            return ids, segments, False
        encoded = self._tokenizer(
            text=text,
            text_pair=text_pair,
            add_special_tokens=True,
            truncation="longest_first",
            max_length=limit,
        )
        return encoded["input_ids"], encoded.get("token_type_ids"), True

    def _require(self, output: str) -> None:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        require_output(self.facts, self.spec.name, output)

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
        pairs = await off_loop(
            size,
            lambda cancel: [
                unless_abandoned(cancel, self._pair_prompt, query, d) for d in documents
            ],
        )
        tokenization_s = time.perf_counter() - tokenizing
        self._check_lengths([len(ids) for ids, _ in pairs])
        outputs = await self._pool_each(
            [ids for ids, _ in pairs],
            None,
            [self._params("classify", use_activation, type_ids) for _, type_ids in pairs],
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
        request = SplitRequest(texts, query=query, max_tokens=max_tokens, wrap=wrap, limits=limits)
        return await off_loop(request.size, self._split_now, request)

    def _split_now(
        self, request: SplitRequest, cancel: threading.Event | None = None
    ) -> list[list[str]]:
        return self._splitter().split_now(request, cancel)

    def _splitter(self) -> Splitter:
        return Splitter(
            model=self.spec.name,
            max_model_len=self.facts.max_model_len,
            tokenizer=self._tokenizer,
            encode_batch=self._encode_batch,
            special_count=self._special_count,
            pair_prompt=self._pair_prompt,
            plain_pairs=self._use_sep_token and not self.spec.score_template,
        )

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool = True
    ) -> list[Tokens]:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        return await off_loop(
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
        return await off_loop(
            sum(map(len, rows)),
            lambda cancel: [
                unless_abandoned(
                    cancel, self._tokenizer.decode, row, skip_special_tokens=skip_special_tokens
                )
                for row in rows
            ],
        )

    def _tokenize_texts(
        self, texts: Sequence[str], truncate: str, limit: int, cancel: threading.Event
    ) -> list[list[int]]:
        """Each text's ids: short texts in batch calls of about GROUP_CHARS characters, a
        long text under truncation from a prefix (suffix) only (`truncation_window`)."""
        out: list[list[int]] = [[] for _ in texts]
        group: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal group, size
            if group:
                stop_if_abandoned(cancel)
                for k, ids in zip(group, self._tokenize_now([texts[k] for k in group])):
                    out[k] = ids
            group, size = [], 0

        for k, text in enumerate(texts):
            if truncate != "none" and len(text) > INLINE_CHARS:
                out[k] = self._truncation_ids(text, truncate, limit, cancel)
                continue
            group.append(k)
            size += len(text)
            if size >= GROUP_CHARS:
                flush()
        flush()
        return out

    def _truncation_ids(
        self, text: str, side: str, limit: int, cancel: threading.Event
    ) -> list[int]:
        for cut in cut_lengths(len(text), limit):
            stop_if_abandoned(cancel)
            ids = truncation_window(text, cut, side, limit, self._encode_one)
            if ids is not None:
                return ids
        stop_if_abandoned(cancel)
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
        task: str,
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
        return PoolingParams(
            task=cast(Any, task), use_activation=use_activation, extra_kwargs=extra
        )

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


def _build_facts() -> tuple[str, str]:
    """What runs the model: ("vllm <version>", device type)."""
    import vllm
    from vllm.platforms import current_platform

    return f"vllm {vllm.__version__}", str(current_platform.device_type)


def _scores_pairs(
    spec: EngineSpec, tasks: Sequence[str], recognition: Recognition | None = None
) -> bool:
    """Whether the loaded model is a pair scorer, checked against the configured kind: in
    `auto`, a classifier with more than one label is not (it classifies)."""
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
    labelled = (
        recognition is not None
        and recognition.kind == CLASSIFIER
        and "score" not in recognition.outputs
    )
    if kind == "auto" and labelled:
        return False
    return can_score and kind != "embedding"


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
