"""The pure parts of the vLLM adapter: engine arguments from a spec, tokenizer faults."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from adapters.base import BACKGROUND_PRIORITY, EngineSpec, InvalidInput, background
from adapters.vllm_engine import _tokenizer_call, engine_arguments


def test_defaults_raise_asyncllm_limits_to_offline_values() -> None:
    args = engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=False)
    assert args["max_num_batched_tokens"] == 16384
    assert args["max_num_seqs"] == 1024
    assert args["runner"] == "pooling"
    assert args["dtype"] == "auto"
    assert args["gpu_memory_utilization"] == 0.9
    assert "max_model_len" not in args


def test_cpu_defaults_and_long_models() -> None:
    spec = EngineSpec(
        name="m", model="/m", max_model_len=32768, engine_kwargs={"enforce_eager": True}
    )
    args = engine_arguments(spec, on_cpu=True)
    assert args["dtype"] == "float32"
    assert args["gpu_memory_utilization"] == 0.2
    # A whole prompt must fit in one engine step for pooling models.
    assert args["max_num_batched_tokens"] == 32768
    assert args["enforce_eager"] is True


# -- rerank: the tokenizer-side helpers, on the built-in model's tokenizer (no engine) --------

from transformers import AutoTokenizer

from adapters.base import ModelFacts
from adapters.vllm_engine import VLLMEngine, _scores_pairs
from gateway.config import resolve_model_path

TEMPLATE = "Q={{ messages[0].content }}|D={{ messages[1].content }}"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))


def offline_engine(tokenizer, max_model_len: int = 32, **spec) -> VLLMEngine:
    engine = VLLMEngine(EngineSpec(name="m", model="/m", **spec))
    engine._tokenizer = tokenizer
    engine._facts = ModelFacts(dimension=0, max_model_len=max_model_len, scores_pairs=True)
    return engine


def test_hf_overrides_become_an_engine_argument() -> None:
    overrides = {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
    }
    args = engine_arguments(EngineSpec(name="m", model="/m", hf_overrides=overrides), on_cpu=True)
    assert args["hf_overrides"] == overrides
    assert "hf_overrides" not in engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=True)


def test_cross_encoder_pairs_carry_segment_ids(tokenizer) -> None:
    ids, type_ids = offline_engine(tokenizer)._pair_prompt("a query", "the document")
    assert ids == tokenizer("a query", "the document")["input_ids"]
    assert type_ids == [0, 0, 0, 0, 1, 1, 1]


def test_score_template_renders_query_then_document(tokenizer) -> None:
    ids, type_ids = offline_engine(tokenizer, score_template=TEMPLATE)._pair_prompt("q1", "d2")
    assert tokenizer.decode(ids) == "q = q1 | d = d2"
    assert type_ids is None


def test_llm_without_template_concatenates_as_vllm_does(tokenizer) -> None:
    engine = offline_engine(tokenizer)
    engine._use_sep_token = False
    ids, _ = engine._pair_prompt("paris", "france")
    assert ids == tokenizer("parisfrance")["input_ids"]


def test_split_keeps_every_word_and_fits_the_window(tokenizer) -> None:
    text = " ".join(f"word{i} unbelievably" for i in range(40))
    engine = offline_engine(tokenizer, max_model_len=32)
    (pieces,) = engine._split_now([text], "short query", None)
    budget = 32 - len(tokenizer("short query", "")["input_ids"])
    assert len(pieces) > 1
    assert "".join(pieces) == text
    for piece in pieces:
        assert len(tokenizer("short query", piece)["input_ids"]) <= 32
        assert len(tokenizer(piece, add_special_tokens=False)["input_ids"]) <= budget


def test_split_respects_max_tokens_and_leaves_short_texts_whole(tokenizer) -> None:
    engine = offline_engine(tokenizer, max_model_len=512)
    short, long = engine._split_now(["a b", "one two three four five"], None, 2)
    assert short == ["a b"]
    assert long == ["one two ", "three four ", "five"]


def test_split_leaves_room_for_a_document_prompt(tokenizer) -> None:
    engine = offline_engine(tokenizer, max_model_len=16)
    text = " ".join(f"w{i}" for i in range(30))
    (pieces,) = engine._split_now([text], None, None, lambda t: "passage: " + t)
    assert "".join(pieces) == text and len(pieces) > 1
    for piece in pieces:
        assert len(tokenizer("passage: " + piece)["input_ids"]) <= 16


def test_split_refuses_a_query_that_fills_the_window(tokenizer) -> None:
    with pytest.raises(InvalidInput, match="no room"):
        offline_engine(tokenizer, max_model_len=8)._split_now(["d"], "a b c d e f g", None)


@pytest.mark.parametrize(
    "kind, tasks, expected",
    [
        ("auto", ("embed", "token_embed"), False),
        ("auto", ("classify", "token_classify"), True),
        ("cross_encoder", ("classify",), True),
        ("llm", ("classify",), True),
        ("embedding", ("embed", "classify"), False),
    ],
)
def test_rerank_kind_against_what_the_model_supports(kind, tasks, expected) -> None:
    assert _scores_pairs(EngineSpec(name="m", model="/m", rerank_kind=kind), tasks) is expected


@pytest.mark.parametrize(
    "kind, tasks, message",
    [
        ("cross_encoder", ("embed",), "not a sequence classifier"),
        ("llm", ("embed",), "hf_overrides"),
        ("embedding", ("classify",), "cannot embed"),
    ],
)
def test_rerank_kind_mismatch_fails_the_load(kind, tasks, message) -> None:
    with pytest.raises(ValueError, match=message):
        _scores_pairs(EngineSpec(name="m", model="/m", rerank_kind=kind), tasks)


class PanicException(BaseException):
    """What pyo3 raises for a Rust panic in `tokenizers`: not an Exception (PyO3#2783)."""


def test_tokenizer_panic_becomes_invalid_input() -> None:
    def panics(texts, add_special_tokens):
        raise PanicException("byte index 3 is not a char boundary")

    with pytest.raises(InvalidInput, match="tokenizer rejected the input: PanicException"):
        _tokenizer_call(panics, ["x"], True)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_tokenizer_does_not_swallow_interrupts(exc) -> None:
    def interrupted(texts, add_special_tokens):
        raise exc()

    with pytest.raises(exc):
        _tokenizer_call(interrupted, ["x"], True)


def test_cpu_thread_binding_lists_every_available_core() -> None:
    from adapters.vllm_engine import cpu_thread_binding

    assert cpu_thread_binding("all", {0, 1}) == "0-1"
    assert cpu_thread_binding("all", {3}) == "3"
    assert cpu_thread_binding("all", {0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpu_thread_binding("auto", {0, 1}) == "auto"
    assert cpu_thread_binding("0-3|4-7", {0}) == "0-3|4-7"


def test_cpu_preload_puts_tcmalloc_and_intel_openmp_first_once(monkeypatch, tmp_path) -> None:
    import ctypes.util
    import sys

    from adapters import vllm_engine

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.4")
    iomp = str(tmp_path / "lib" / "libiomp5.so")
    assert vllm_engine.cpu_preload("") == f"libtcmalloc_minimal.so.4:{iomp}"
    # The operator's own entries stay, after ours; a library already named is not added twice.
    assert (
        vllm_engine.cpu_preload("/x/libfoo.so") == f"libtcmalloc_minimal.so.4:{iomp}:/x/libfoo.so"
    )
    assert vllm_engine.cpu_preload("/opt/libtcmalloc.so") == f"{iomp}:/opt/libtcmalloc.so"
    both = f"libtcmalloc_minimal.so.4:{iomp}"
    assert vllm_engine.cpu_preload(both) == both
    # Nothing found: nothing added.
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    (tmp_path / "lib" / "libiomp5.so").unlink()
    assert vllm_engine.cpu_preload("") == ""


def test_engine_environment_on_the_cpu_build_and_nothing_on_gpu(monkeypatch) -> None:
    from adapters import vllm_engine

    monkeypatch.setattr(vllm_engine, "_vllm_cpu_build", lambda: True)
    monkeypatch.setattr(vllm_engine, "cpu_preload", lambda current: "libtcmalloc.so:libiomp5.so")
    assert vllm_engine.engine_environment("0-1,3") == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1,3",
        "LD_PRELOAD": "libtcmalloc.so:libiomp5.so",
    }
    monkeypatch.setattr(vllm_engine, "cpu_preload", lambda current: "")
    assert vllm_engine.engine_environment("auto") == {"VLLM_CPU_OMP_THREADS_BIND": "auto"}
    monkeypatch.setattr(vllm_engine, "_vllm_cpu_build", lambda: False)
    assert vllm_engine.engine_environment("all") == {}


def test_this_machine_has_the_cpu_build_and_the_preloads_make_installs() -> None:
    """`make install` installs vllm-cpu (with intel-openmp) and tcmalloc (apt): both found."""
    from adapters import vllm_engine

    assert vllm_engine._vllm_cpu_build()
    preload = vllm_engine.cpu_preload("")
    assert "tcmalloc" in preload and "libiomp5.so" in preload


# -- background work: paced and at vLLM's lower priority (engine test: tests/e2e) -------------


def test_engines_schedule_by_priority_unless_told_otherwise() -> None:
    assert engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=True)["scheduling_policy"] == (
        "priority"
    )
    spec = EngineSpec(name="m", model="/m", engine_kwargs={"scheduling_policy": "fcfs"})
    assert engine_arguments(spec, on_cpu=True)["scheduling_policy"] == "fcfs"


class _RecordingLLM:
    """AsyncLLM.encode as the adapter calls it: records each request's priority."""

    def __init__(self) -> None:
        self.priorities: list[int] = []

    async def encode(self, prompt, params, *, request_id: str, priority: int):
        self.priorities.append(priority)
        yield SimpleNamespace(
            outputs=SimpleNamespace(data=SimpleNamespace(numpy=lambda: np.zeros(3)))
        )


class _RecordingPacer:
    def __init__(self) -> None:
        self.asked: list[int] = []

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int):
        self.asked.append(tokens)
        yield


def test_background_inputs_wait_for_the_pacer_and_run_at_low_priority() -> None:
    engine = VLLMEngine(EngineSpec(name="m", model="/m"))
    engine._llm = llm = _RecordingLLM()
    pacer = _RecordingPacer()

    async def work() -> None:
        await engine._pool({"prompt_token_ids": [101, 7, 102]}, None, "interactive")
        with background(pacer):
            await engine._pool({"prompt_token_ids": [101, 7, 8, 102]}, None, "batch")
        await engine._pool({"prompt_token_ids": [101, 102]}, None, "interactive-again")

    asyncio.run(work())
    assert llm.priorities == [0, BACKGROUND_PRIORITY, 0]
    assert pacer.asked == [4]
