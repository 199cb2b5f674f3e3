"""vLLM's engine arguments from a spec."""

from __future__ import annotations

from adapters.base import EngineSpec
from adapters.vllm import engine_arguments


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


def test_hf_overrides_become_an_engine_argument() -> None:
    overrides = {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
    }
    args = engine_arguments(EngineSpec(name="m", model="/m", hf_overrides=overrides), on_cpu=True)
    assert args["hf_overrides"] == overrides
    assert "hf_overrides" not in engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=True)


def test_engines_schedule_by_priority_unless_told_otherwise() -> None:
    assert engine_arguments(EngineSpec(name="m", model="/m"), on_cpu=True)["scheduling_policy"] == (
        "priority"
    )
    spec = EngineSpec(name="m", model="/m", engine_kwargs={"scheduling_policy": "fcfs"})
    assert engine_arguments(spec, on_cpu=True)["scheduling_policy"] == "fcfs"
