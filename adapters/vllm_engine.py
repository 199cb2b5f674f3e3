"""The vLLM adapter: one in-process `AsyncLLM` with the pooling runner per model.

This is the only module that imports vllm, and it does so lazily (inside methods) so that the
HTTP layer and the fake engine work where vllm is not installed. vLLM's exceptions are
translated to the engine vocabulary of `adapters.base` in `_translate`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable, Sequence

import numpy as np

from adapters.base import (
    EmbedOptions,
    EmbeddingBatch,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    InvalidInput,
    ModelFacts,
    Prompt,
)
from adapters.prompts import SpecialTokens, check_vocabulary, fit

log = logging.getLogger(__name__)

# Below this many texts the thread hop costs more than tokenizing on the event loop.
_TOKENIZE_INLINE_MAX = 8
# vLLM on CPU reads gpu_memory_utilization as a share of host memory for its cache.
_CPU_MEMORY_SHARE = 0.2


class VLLMEngine:
    """An `Engine` backed by vLLM's `AsyncLLM` (pooling runner), in this process."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self._llm: Any = None
        self._tokenizer: Any = None
        self._params: Any = None
        self._encode_batch: Callable[[list[str]], list[list[int]]] | None = None
        self._specials = SpecialTokens()
        self._facts: ModelFacts | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        # Building the engine blocks (it spawns the engine-core process and waits for the
        # model to load); a thread keeps /health and /ready answering meanwhile.
        from vllm import PoolingParams

        self._llm = await asyncio.to_thread(self._build)
        self._tokenizer = self._llm.get_tokenizer()
        # One instance for every prompt: vLLM clones it per request. Built once because the
        # lazy `from vllm import` costs a module __getattr__ on every call.
        self._params = PoolingParams(task="embed")
        self._encode_batch = rust_batch_encoder(self._tokenizer)
        self._specials = SpecialTokens.of(self._tokenizer("a")["input_ids"],
                                          self._tokenizer("a", add_special_tokens=False)["input_ids"])
        max_len = int(self._llm.model_config.max_model_len)
        self._facts = ModelFacts(dimension=0, max_model_len=max_len)
        # One real request finds the output dimension (models with a projection head differ
        # from hidden_size) and warms the engine up before /ready says yes.
        probe = await self.embed(["warm-up"])
        self._facts = ModelFacts(dimension=int(probe.vectors.shape[1]), max_model_len=max_len)
        log.info("engine %s ready: dimension=%d max_model_len=%d",
                 self.spec.name, self._facts.dimension, max_len)

    def _build(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_arguments(self.spec, on_cpu=current_platform.is_cpu())
        log.info("starting vLLM engine for %s: %s", self.spec.name, args)
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise _translate(exc) from exc

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
        token_ids, specials = await self._token_ids(prompts)
        token_ids, truncated = fit(token_ids, options, max_model_len=self.facts.max_model_len,
                                   model=self.spec.name, specials=specials)
        request_id = uuid.uuid4().hex
        # One engine request per input, all in flight at once, so vLLM's continuous batching
        # mixes them with other requests' inputs.
        outputs = await asyncio.gather(
            *(self._encode_one(ids, f"{request_id}-{i}") for i, ids in enumerate(token_ids))
        )
        vectors = np.stack(outputs).astype(np.float32, copy=False)
        return EmbeddingBatch(vectors=vectors, token_counts=[len(ids) for ids in token_ids],
                              truncated=truncated)

    async def _token_ids(
        self, prompts: Sequence[Prompt]
    ) -> tuple[list[list[int]], list[SpecialTokens]]:
        """Texts tokenized (with special tokens) and client ids checked against the vocabulary."""
        texts = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
        tokenized = await self._tokenize([text for _, text in texts]) if texts else []
        token_ids: list[list[int]] = [[] for _ in prompts]
        specials = [SpecialTokens() for _ in prompts]
        for (i, _), ids in zip(texts, tokenized):
            token_ids[i], specials[i] = ids, self._specials
        vocab = len(self._tokenizer)
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                token_ids[i] = check_vocabulary(prompt, vocab, index=i)
        return token_ids, specials

    async def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        # One batch call of the fast tokenizer, handing token ids to the engine: vLLM would
        # otherwise tokenize one prompt per call, which is most of its per-text cost.
        if len(texts) <= _TOKENIZE_INLINE_MAX:
            return self._tokenize_now(texts)
        return await asyncio.to_thread(self._tokenize_now, texts)

    def _tokenize_now(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            if self._encode_batch is not None:
                return self._encode_batch(list(texts))
            return self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        except Exception as exc:  # a tokenizer panic must not become an opaque 500
            raise InvalidInput(f"the model's tokenizer rejected the input: {exc}") from exc

    async def _encode_one(self, token_ids: list[int], request_id: str) -> np.ndarray:
        final = None
        try:
            async for output in self._llm.encode(
                {"prompt_token_ids": token_ids}, self._params, request_id=request_id
            ):
                final = output
        except asyncio.CancelledError:
            raise  # AsyncLLM.encode aborts the engine request itself on cancellation
        except Exception as exc:
            raise _translate(exc) from exc
        if final is None:
            raise EngineFailure(f"engine returned no output for request {request_id}")
        return final.outputs.data.numpy()


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

        same = encode(_ENCODER_PROBES) == tokenizer(
            _ENCODER_PROBES, add_special_tokens=True)["input_ids"]
    except Exception:  # any surprise in a tokenizer's internals: keep the wrapper
        log.warning("tokenizer batch encoder unavailable; using the transformers wrapper",
                    exc_info=True)
        return None
    return encode if same else None


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
    }
    if spec.max_model_len:
        args["max_model_len"] = spec.max_model_len
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
