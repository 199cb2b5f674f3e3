"""vLLM's engine arguments for a model's spec, and the check that its weights can be found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.base import EngineSpec

# vLLM on CPU reads gpu_memory_utilization as a share of host memory for its cache.
_CPU_MEMORY_SHARE = 0.2


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
