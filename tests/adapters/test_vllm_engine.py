"""The pure part of the vLLM adapter: engine arguments from a spec."""

from __future__ import annotations

from adapters.base import EngineSpec
from adapters.vllm_engine import engine_arguments


def test_defaults_raise_asyncllm_limits_to_offline_values() -> None:
    args = engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=False)
    assert args["max_num_batched_tokens"] == 16384
    assert args["max_num_seqs"] == 1024
    assert args["runner"] == "pooling"
    assert args["dtype"] == "auto"
    assert args["gpu_memory_utilization"] == 0.9
    assert "max_model_len" not in args


def test_cpu_defaults_and_long_models() -> None:
    spec = EngineSpec(name="m", model="/m", max_model_len=32768,
                      engine_kwargs={"enforce_eager": True})
    args = engine_arguments(spec, on_cpu=True)
    assert args["dtype"] == "float32"
    assert args["gpu_memory_utilization"] == 0.2
    # A whole prompt must fit in one engine step for pooling models.
    assert args["max_num_batched_tokens"] == 32768
    assert args["enforce_eager"] is True
