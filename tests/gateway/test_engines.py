"""Engines by name: `--engine fake` builds the fake adapter, imported only when asked for, and
the registry wraps each engine in the vector cache the settings ask for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine
from gateway.config import Settings, load_settings
from gateway.engines import build_registry, engine_preload, make_engine, prepare_process
from gateway.serving.cache import CachingEngine


def test_the_fake_engine_takes_the_specs_switches() -> None:
    spec = EngineSpec(name="m", model="m", engine_kwargs={"dimension": 8})
    engine = make_engine("fake", spec)
    assert isinstance(engine, FakeEngine)
    assert engine.facts.dimension == 8 and engine.facts.max_model_len == 512


def test_a_pair_reranker_spec_makes_a_fake_that_scores_pairs() -> None:
    engine = make_engine("fake", EngineSpec(name="r", model="r", rerank_kind="cross_encoder"))
    assert engine.facts.scores_pairs


def test_configured_outputs_make_a_fake_that_computes_them() -> None:
    engine = make_engine("fake", EngineSpec(name="m3", model="m3", outputs=("dense", "sparse")))
    assert engine.facts.outputs == ("dense", "sparse")
    assert make_engine("fake", EngineSpec(name="e", model="e")).facts.outputs == ("dense",)


def test_every_served_model_is_wrapped_in_the_cache() -> None:
    registry = build_registry(load_settings({"engine": "fake", "embedding_cache_size": 10}))
    assert registry.models and all(isinstance(m.engine, CachingEngine) for m in registry.models)


def test_the_fake_engine_needs_no_process_setup() -> None:
    settings = Settings(engine="fake")
    assert prepare_process(settings) is None and engine_preload(settings) is None


@pytest.mark.process
def test_importing_the_gateway_imports_no_adapter_but_the_base() -> None:
    code = (
        "import sys, gateway.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('adapters.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['adapters.base']"
