"""The vLLM adapter's tokenizer-side parts run on the built-in model's tokenizer, without an
engine; the engine tests start real engines over tiny seeded models (harness/models.py)."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from adapters.base import EngineSpec, ModelFacts
from adapters.vllm import VLLMEngine
from gateway.config import resolve_model_path
from harness import models


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))


@pytest.fixture
def offline_engine(tokenizer) -> Callable[..., VLLMEngine]:
    """An engine with the tokenizer and a window but no AsyncLLM: `offline_engine(max_model_len,
    **spec)`."""

    def make(max_model_len: int = 32, **spec: Any) -> VLLMEngine:
        engine = VLLMEngine(EngineSpec(name="m", model="/m", **spec))
        engine._tokenizer = tokenizer
        engine._facts = ModelFacts(dimension=0, max_model_len=max_model_len, scores_pairs=True)
        return engine

    return make


# -- real engines over tiny seeded models (tests marked `engine`) ------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module: an AsyncLLM serves the loop it first ran on."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def start_engine(loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., VLLMEngine]]:
    """`start_engine(path, **spec)`: a started VLLMEngine, shut down at the module's end. Its
    start time is printed (run with -s to see it)."""
    started: list[VLLMEngine] = []

    def start(path: str | Path, **spec: Any) -> VLLMEngine:
        spec.setdefault("max_model_len", 128)
        spec.setdefault("gpu_memory_utilization", 0.05)
        engine = VLLMEngine(EngineSpec(name=Path(path).name, model=str(path), **spec))
        began = time.monotonic()
        loop.run_until_complete(engine.start())
        print(f"\n{engine.spec.name}: engine started in {time.monotonic() - began:.1f} s")
        started.append(engine)
        return engine

    yield start
    # vLLM leaves its ZeroMQ context to the garbage collector, which warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for engine in started:
            loop.run_until_complete(engine.shutdown())
        started.clear()
        gc.collect()


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def splade_path(model_folders: Path) -> Path:
    return models.build_splade(model_folders)


@pytest.fixture(scope="session")
def bge_m3_path(model_folders: Path) -> Path:
    return models.build_bge_m3(model_folders)


@pytest.fixture(scope="session")
def colbert_path(model_folders: Path) -> Path:
    return models.build_colbert(model_folders)


@pytest.fixture(scope="session")
def classifier_path(model_folders: Path) -> Path:
    return models.build_classifier(model_folders)


@pytest.fixture(scope="session")
def multi_label_path(model_folders: Path) -> Path:
    return models.build_classifier(model_folders, multi_label=True)
