"""Long texts under truncation are tokenized from a prefix (suffix) only, and give exactly the
ids that tokenizing and truncating the whole text gives (the real MiniLM tokenizer); long
texts are counted and cut for rerank in windows that give exactly the whole text's tokens,
with memory bounded by a window, not by the text; large tokenizer work runs in a thread and
stops when its request is abandoned."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import tracemalloc

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer

from adapters.base import EmbedOptions, EngineSpec, InvalidInput, ModelFacts, SplitLimits
from adapters.token_limits import (
    CUT_MARGIN_CHARS,
    WINDOW_CHARS,
    SpecialTokens,
    cut_lengths,
    fit,
    token_starts,
)
from adapters.vllm import VLLMEngine
from adapters.vllm.splitting import SplitRequest, Splitter
from adapters.vllm.tokenizing import Abandoned, off_loop, rust_batch_encoder
from gateway.config import resolve_model_path


@pytest.fixture(scope="module")
def engine() -> VLLMEngine:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    engine = VLLMEngine(EngineSpec(name="m", model="/m"))
    engine._tokenizer = tokenizer
    engine._encode_batch = rust_batch_encoder(tokenizer)
    engine._specials = SpecialTokens(1, 1)
    engine._special_count = 2
    engine._facts = ModelFacts(dimension=384, max_model_len=256)
    return engine


def _words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocabulary = [
        "the",
        "capital",
        "of",
        "France",
        "is",
        "Paris,",
        "unbelievably",
        "(x)",
        "naïve",
        "日本語",
        "🚀",
        "3.14159",
        "--",
        "\t",
        "\n\n",
        "a" * 150,
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(n))


LONG_TEXTS = {
    "stars": "* " * 200_000,
    "words": _words(60_000),
    "no spaces": "abc,def;" * 30_000,
    "cjk": "日本語のテキスト" * 20_000,
    "space runs": ("word" + " " * 300) * 2_000,
    "one long word": "x" * 400_000,
    "emoji": "🚀🎉 " * 50_000,
}


@pytest.mark.parametrize("side", ["end", "start"])
@pytest.mark.parametrize("name", list(LONG_TEXTS))
def test_a_cut_long_text_truncates_exactly_as_the_whole(engine, name, side) -> None:
    text = LONG_TEXTS[name]
    options = EmbedOptions(truncate=side)
    whole = engine._tokenize_now([text])
    cut = engine._tokenize_texts([text], side, 256, threading.Event())
    assert fit(cut, options, max_model_len=256, model="m", specials=[SpecialTokens(1, 1)]) == fit(
        whole, options, max_model_len=256, model="m", specials=[SpecialTokens(1, 1)]
    )


def test_a_cut_reads_a_prefix_not_the_whole(engine, monkeypatch) -> None:
    read: list[int] = []
    encode_one = engine._encode_one
    monkeypatch.setattr(engine, "_encode_one", lambda t: read.append(len(t)) or encode_one(t))
    monkeypatch.setattr(engine, "_tokenize_now", lambda texts: pytest.fail("tokenized whole"))
    engine._tokenize_texts([LONG_TEXTS["words"]], "end", 256, threading.Event())
    assert read and max(read) <= next(cut_lengths(10**9, 256)) * 2


def test_short_and_untruncated_texts_are_tokenized_whole_in_groups(engine) -> None:
    texts = ["hello world", _words(3000), "x"]
    assert engine._tokenize_texts(texts, "none", 256, threading.Event()) == engine._tokenize_now(
        texts
    )


def test_abandoned_tokenizer_work_stops_at_the_next_step() -> None:
    steps: list[float] = []
    started = threading.Event()

    def work(cancel: threading.Event) -> None:
        started.set()
        for _ in range(500):  # 5 s unless stopped
            if cancel.is_set():
                raise Abandoned()
            steps.append(time.monotonic())
            time.sleep(0.01)

    async def abandon() -> None:
        task = asyncio.ensure_future(off_loop(10**6, work))
        await asyncio.to_thread(started.wait)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.monotonic()
        await asyncio.sleep(0.3)
        assert all(t < cancelled_at + 0.05 for t in steps)

    asyncio.run(abandon())
    assert len(steps) < 100


def test_split_refuses_too_many_chunks_before_building_them(engine, monkeypatch) -> None:
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    built = []
    monkeypatch.setattr(Splitter, "_split_one", lambda *a: built.append(1) or [])
    text = " ".join(map(str, range(20_000)))
    with pytest.raises(InvalidInput, match="at least .* chunks of at most 1 tokens"):
        engine._split_now(SplitRequest([text], "q", 1, limits=SplitLimits(max_chunks=10_000)))
    assert built == []


def test_split_keeps_only_the_first_chunks_asked_for(engine) -> None:
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    text = " ".join(map(str, range(5_000)))
    (pieces,) = engine._split_now(
        SplitRequest([text], "q", 2, limits=SplitLimits(max_chunks_per_text=3))
    )
    assert len(pieces) == 3 and text.startswith("".join(pieces))


# -- rerank's split: counted and cut in windows ---------------------------------------------


def _trained(kind: str) -> Tokenizer:
    """A small tokenizer of another family than MiniLM's WordPiece, trained here (no hub):
    byte-level BPE (GPT-2, Qwen) or Unigram with Metaspace (SentencePiece: T5, XLM-R)."""
    corpus = [_words(2000, seed) for seed in range(5)] + [
        "日本語のテキスト 🚀🎉 abc,def; 12345"
    ] * 10
    if kind == "byte-level BPE":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=300, unk_token="<unk>", special_tokens=["<unk>"]
        )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


@pytest.fixture(scope="module", params=["MiniLM WordPiece", "byte-level BPE", "Unigram"])
def spans(request, engine):
    if request.param == "MiniLM WordPiece":
        tokenizer = engine._tokenizer
        return lambda text: tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
    trained = _trained(request.param)
    return lambda text: trained.encode(text, add_special_tokens=False).offsets


NUMBERS = " ".join(str(i) for i in range(60_000))  # the costs battery's rerank document


@pytest.mark.parametrize("name", [*LONG_TEXTS, "numbers"])
def test_windows_find_the_whole_texts_tokens(spans, name) -> None:
    text = LONG_TEXTS.get(name, NUMBERS)[:20_000]  # 20 windows of 1,000 characters
    whole = [start for start, _ in spans(text)]
    assert [s for batch in token_starts(text, spans, 1000) for s in batch] == whole


def test_a_refused_split_tokenizes_a_window_at_a_time(engine, monkeypatch) -> None:
    # The costly-requests row: 4 documents of 60,000 numbers, 1 token per chunk. Their
    # whole-document offsets would take 116 MB (about a hundred bytes per token) before the
    # refusal.
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    tokenizer, read = engine._tokenizer, []

    def spy(text, *args, **kwargs):
        read.append(len(text))
        return tokenizer(text, *args, **kwargs)

    monkeypatch.setattr(engine, "_tokenizer", spy)
    limits = SplitLimits(max_chunks=10_000, max_total_tokens=300_000)
    with pytest.raises(InvalidInput, match="at least 612752 chunks of at most 1 tokens"):
        engine._split_now(SplitRequest([NUMBERS] * 4, "which number", 1, limits=limits))
    assert max(read) <= WINDOW_CHARS + 2 * CUT_MARGIN_CHARS


def test_a_long_document_is_split_holding_a_window_not_the_document(engine) -> None:
    engine._facts = ModelFacts(dimension=0, max_model_len=256, scores_pairs=True)
    pieces: list[list[str]] = []
    tracemalloc.start()
    try:
        pieces.extend(
            engine._split_now(
                SplitRequest([NUMBERS], "q", 3, limits=SplitLimits(max_chunks_per_text=2))
            )
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Whole-document offsets took 27 MB, 77 times the document.
    assert peak < 2 * len(NUMBERS)
    assert pieces == [["0 1 2 ", "3 4 5 "]]


@pytest.mark.parametrize("query", [None, "which one is it"])
def test_short_documents_are_counted_in_one_batch_and_kept_whole(engine, monkeypatch, query):
    """A rerank of 32 short documents costs one batched tokenizer call, not two wrapper calls
    per document, and gives what the document-by-document path gives (a wrap that changes
    nothing takes that path)."""
    engine._facts = ModelFacts(dimension=0, max_model_len=64, scores_pairs=query is not None)
    documents = [_words(8, seed) for seed in range(31)] + [_words(300, 99)]
    tokenizer, calls = engine._tokenizer, []

    def spy(*args, **kwargs):
        calls.append([*args, kwargs.get("text_pair")])
        return tokenizer(*args, **kwargs)

    monkeypatch.setattr(engine, "_tokenizer", spy)
    fast = engine._split_now(SplitRequest(documents, query, None))
    fast_calls = len(calls)
    monkeypatch.setattr(engine, "_tokenizer", tokenizer)
    if query is None:
        slow = engine._split_now(SplitRequest(documents, None, None, wrap=lambda text: text))
    else:
        monkeypatch.setattr(engine, "_encode_batch", None)
        monkeypatch.setattr(engine, "_use_sep_token", True)
        slow = [
            engine._splitter()._split_one(text, n, *rest)
            for text, n, *rest in _slow_split_arguments(engine, documents, query)
        ]
    assert fast == slow
    assert fast[:31] == [[d] for d in documents[:31]] and len(fast[31]) > 1
    # The probes of the prompt's overhead, then only the one long document's own calls.
    long_calls = sum(
        1
        for texts in calls
        if any(isinstance(t, str) and len(t) > 3 and t in documents[31] for t in texts)
    )
    assert fast_calls - long_calls <= 3


def _slow_split_arguments(engine, documents, query):
    """_split_one's arguments for every document, as the per-document path computes them."""
    from adapters.token_limits import token_starts as starts

    tok, limit = engine._tokenizer, engine.facts.max_model_len

    def prompt_length(piece: str) -> int:
        return len(engine._pair_prompt(query, piece)[0])

    overhead = prompt_length("x") - len(tok("x", add_special_tokens=False)["input_ids"])
    budget = limit - overhead

    def fits(piece: str, size: int) -> bool:
        return size <= budget and prompt_length(piece) <= limit

    def spans(part: str):
        return tok(part, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    for text in documents:
        n = sum(map(len, starts(text, spans)))
        yield text, n, spans, budget, fits, None, None
