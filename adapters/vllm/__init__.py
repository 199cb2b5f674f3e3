"""The vLLM adapter, the only package that imports vllm (lazily: importing this package does
not import vllm or torch, so the HTTP layer and the fake engine work where vllm is missing).

engine       VLLMEngine: one in-process AsyncLLM per model; vLLM's exceptions translated
splitting    documents cut into pieces whose prompts fit the model's window
tokenizing   tokenizer work on or off the event loop, abandonable; the Rust batch encoder
environment  the CPU engine's thread binding and preloaded libraries (tcmalloc, Intel OpenMP)
arguments    vLLM's engine arguments for a spec; the check that the model can be found
"""

from adapters.vllm.arguments import check_model_source, engine_arguments
from adapters.vllm.engine import VLLMEngine
from adapters.vllm.environment import configure_cpu_threads, engine_environment

__all__ = [
    "VLLMEngine",
    "check_model_source",
    "configure_cpu_threads",
    "engine_arguments",
    "engine_environment",
]
