"""Request inputs to engine prompts: token ids decoded or passed through, the prompt template
chosen by `input_type` or a virtual model name applied, and the truncation policy resolved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from adapters.base import EmbedOptions, Prompt
from gateway.config import InputPolicy, Settings
from gateway.errors import invalid
from gateway.serving import costs
from gateway.serving.registry import ServedModel
from gateway.serving.token_ids import Cl100kDecoder

# `input_type` values: ours, Cohere's, and the sentence-transformers prompt names they select.
INPUT_TYPES = (
    "query",
    "document",
    "passage",
    "search_query",
    "search_document",
    "classification",
    "clustering",
)
# Texts, or token-id lists (one list per input).
Inputs = list[str] | list[list[int]]
# Which of a model's prompts each `input_type` selects, first match wins. sentence-transformers
# models name their document prompt "document" or "passage".
PROMPTS_FOR_INPUT_TYPE = {
    "query": ("query",),
    "search_query": ("query",),
    "document": ("document", "passage"),
    "search_document": ("document", "passage"),
    "passage": ("passage", "document"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}


@dataclass(frozen=True)
class Truncation:
    """A request's truncation policy; None fields fall back to the model's settings."""

    truncate: str | None = None
    max_tokens: int | None = None

    @classmethod
    def of(cls, truncate: str | None, cap: int | None) -> Truncation:
        """A cap without `truncate` truncates the end, as vLLM does; -1 caps at the window."""
        if cap is None:
            return cls(truncate, None)
        return cls(truncate or "end", None if cap == -1 else cap)


@dataclass(frozen=True)
class EngineCall:
    """What to hand `Engine.embed`."""

    prompts: list[Prompt]
    options: EmbedOptions


async def engine_call(
    served: ServedModel,
    name: str,
    inputs: Inputs,
    input_type: str | None,
    truncation: Truncation,
    decoder: Cl100kDecoder,
    settings: Settings,
) -> EngineCall:
    """`name` is the model name the client used: a virtual name applies its prompt, unless an
    explicit `input_type` chooses another. What the inputs may cost is checked first
    (`gateway.costs`), before anything is decoded or tokenized."""
    policy = served.policy
    truncate = truncation.truncate or policy.truncate
    await _check_costs(served, inputs, truncate != "none", decoder, settings)
    template = prompt_template(policy, name=served.prompt_of(name), input_type=input_type)
    prompts = await _decode(policy, inputs, decoder, templated=template is not None)
    if template is not None:  # `_decode` refused ids it could not template
        prompts = [apply_template(template, p) if isinstance(p, str) else p for p in prompts]
    options = EmbedOptions(truncate=truncate, max_tokens=truncation.max_tokens)
    return EngineCall(list(prompts), options)


def prompt_template(policy: InputPolicy, *, name: str | None, input_type: str | None) -> str | None:
    """The template to apply; None leaves texts unchanged (also for a model without prompts,
    so that Cohere clients, which always send `input_type`, work with every model)."""
    if input_type is not None:
        for candidate in PROMPTS_FOR_INPUT_TYPE[input_type]:
            if candidate in policy.prompts:
                return policy.prompts[candidate]
        return None
    return policy.prompts[name] if name is not None else None


def apply_template(template: str, text: str) -> str:
    """`{text}` marks where the input goes; a template without it is a prefix (as
    sentence-transformers applies its `prompts`)."""
    if "{text}" in template:
        return template.replace("{text}", text)
    return template + text


async def _check_costs(
    served: ServedModel,
    inputs: Inputs,
    truncating: bool,
    decoder: Cl100kDecoder,
    settings: Settings,
) -> None:
    window = served.engine.facts.max_model_len
    if not inputs or isinstance(inputs[0], str):
        sizes = [len(text) for text in cast("list[str]", inputs)]
        costs.check_chars(
            sizes, truncating=truncating, settings=settings, window=window, model=served.name
        )
    elif served.policy.token_ids == "cl100k_base":
        sizes = await decoder.decoded_sizes(inputs)
        costs.check_chars(
            sizes,
            truncating=truncating,
            settings=settings,
            window=window,
            model=served.name,
            decoded=True,
        )
    else:
        costs.check_native_ids(
            [len(ids) for ids in inputs], truncating=truncating, window=window, settings=settings
        )


async def _decode(
    policy: InputPolicy, inputs: Inputs, decoder: Cl100kDecoder, *, templated: bool
) -> Sequence[Prompt]:
    if not inputs or isinstance(inputs[0], str):
        return inputs
    if policy.token_ids == "cl100k_base":
        return await decoder.decode(inputs)
    if templated:
        raise invalid(
            "a prompt template cannot be applied to token ids of the model's own "
            "vocabulary; send text, or leave out `input_type`",
            param="input",
        )
    return inputs
