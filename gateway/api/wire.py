"""The wire framework: how every request body is declared once (pydantic), the one
translation of validation errors into the gateway's `invalid(...)` messages, and the JSON
Schemas /openapi.json generates from the declarations.

A declaration is the only statement of a field's type, enum, minimum and limits: `parse`
validates a decoded JSON body against it, and `request_schemas` turns the same declarations
into the JSON Schemas of /openapi.json. Conventions every shape shares (`Wire`):
- unknown fields are ignored, as the OpenAI API does;
- an explicit `null` means the field is absent (LangChain sends `"max_tokens_per_doc": null`);
- strict types: a bool is not an integer, "4" is not a number;
- limits that come from the settings (`Limit`) are checked against the `Settings` passed to
  `parse` and written into the schema by `request_schemas`;
- wording of a refusal lives next to the field it is about (`Says`); everything else gets
  the generic wording of `_wording`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, Union, get_args

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from adapters.base import TRUNCATE_CHOICES
from gateway.config import Settings
from gateway.errors import APIError, brief, invalid
from gateway.serving.hybrid import MODES
from gateway.serving.inputs import INPUT_TYPES

# Lone surrogates cannot be encoded as UTF-8 (the tokenizer would fail on them); NUL is
# refused because tokenizers and downstream stores treat it inconsistently.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")

# -- declaration vocabulary -------------------------------------------------------------------


@dataclass(frozen=True)
class Says:
    """How any refusal of this field is worded (content and limit refusals excepted): a
    format string with `{name}` (the field), `{value}` (a brief echo of the refused value)
    and `{type}`, or a function of the pydantic error."""

    text: str | Callable[[ErrorDetails], str]


@dataclass(frozen=True)
class Limit:
    """At most `Settings.<setting>` items: checked at parse time against the settings given
    to `parse` (before the items are validated), written as `maxItems` by `request_schemas`."""

    setting: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.with_info_before_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return {**handler(schema), _LIMIT_KEY: self.setting}

    def _check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if isinstance(value, list) and info.context is not None:
            most = getattr(info.context, self.setting)
            if len(value) > most:
                raise PydanticCustomError(
                    "too_many", "too many items", {"actual": len(value), "most": most}
                )
        return value


class ServedName:
    """The `model` field: documented as an enum of the served names by `request_schemas`;
    a name not served is refused by the registry (404 `model_not_found`, as OpenAI does)."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return {**handler(schema), _MODELS_KEY: True}


_LIMIT_KEY, _MODELS_KEY = "x-gateway-limit", "x-gateway-served-names"


def one_of(choices: Sequence[str], *, any_case: bool = False) -> Any:
    """A string from `choices` (compared lower-cased when `any_case`)."""
    note = " (any case)" if any_case else ""
    kind: Any = Annotated[
        Literal[tuple(choices)],
        Says(f"`{{name}}` must be one of {list(choices)}{note}, got {{value}}"),
    ]
    if any_case:
        kind = Annotated[kind, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]
    return kind


def shapes(decide: Callable[[Any], str | None], **members: Any) -> Any:
    """A union whose member is chosen by `decide(value)` (a member name with spaces for
    underscores, None for none), so that only that member is validated and its errors name
    it. The spaces keep member names out of the paths that error messages show."""
    tagged = [Annotated[kind, Tag(name.replace("_", " "))] for name, kind in members.items()]
    # Union of a runtime tuple: `X | Y` cannot spell it.
    return Annotated[Union[tuple(tagged)], Discriminator(decide)]  # noqa: UP007


# Text the engine will read: no NUL (the schema can say so; lone surrogates it cannot, and
# they fail as `string_unicode`).
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
TokenId = Annotated[int, Field(ge=0)]
Model = Annotated[
    str,
    Field(min_length=1),
    ServedName(),
    Says(
        "`model` is required and must be a non-empty string; GET /v1/models lists the served models"
    ),
]
PositiveInt = Annotated[int, Field(ge=1)]
# vLLM's `truncate_prompt_tokens`, Cohere's `max_tokens`: a token cap, or -1 for the window.
TokenCap = Annotated[
    Literal[-1] | PositiveInt,
    Says("`{name}` must be -1 (the model's window) or an integer of at least 1, got {value}"),
]
InputType = one_of(INPUT_TYPES, any_case=True)
Truncate = one_of(TRUNCATE_CHOICES, any_case=True)


class Wire(BaseModel):
    """The conventions of every request shape (module docstring)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class RankModes(Wire):
    """The rerank fields of a model that ranks by its own outputs (every rerank and score
    dialect): `mode` (dense, sparse, colbert or hybrid; absent: hybrid for a model with all
    three outputs, such as bge-m3, else colbert for token vectors, else dense) and hybrid's
    `weights` [dense, sparse, colbert] (absent: FlagEmbedding's [0.4, 0.2, 0.4])."""

    mode: one_of(MODES) | None = None  # type: ignore[valid-type]  # a runtime Literal
    weights: (
        Annotated[
            # Signs and the sum are checked with the mode (`hybrid.check_weights`).
            list[Annotated[float, Field(allow_inf_nan=False)]],
            Field(min_length=3, max_length=3),
            Says("`weights` must be three numbers [dense, sparse, colbert], none negative"),
        ]
        | None
    ) = None

    @property
    def rank_weights(self) -> tuple[float, ...] | None:
        return None if self.weights is None else tuple(self.weights)


# -- parsing and the one translation of validation errors -------------------------------------

_W = TypeVar("_W", bound=Wire)


def parse(shape: type[_W], body: Any, settings: Settings) -> _W:
    """`body` (decoded JSON) validated against `shape` with `settings`' limits, or the
    `APIError` that says what is wrong with the first refused field."""
    try:
        return shape.model_validate(body, context=settings)
    except pydantic.ValidationError as exc:
        raise _translate(shape, exc.errors(include_url=False)[0]) from None


def _translate(shape: type[Wire], error: ErrorDetails) -> APIError:
    loc = error["loc"]
    if not loc:
        return invalid("the request body must be a JSON object")
    name = str(loc[0])
    where = name + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}"
        for p in loc[1:]
        if isinstance(p, int) or p.isidentifier()
    )
    value = error["input"]
    found = _FORBIDDEN.search(value) if isinstance(value, str) else None
    if found and error["type"] in ("string_pattern_mismatch", "string_unicode"):
        return invalid(forbidden_text(where, found), param=name)
    if error["type"] == "too_many":
        ctx = error["ctx"]
        return invalid(
            f"`{where}` has {ctx['actual']} items, but a request may have at most {ctx['most']}",
            param=name,
        )
    says = _says(shape, name)
    if says is None:
        return invalid(_wording(where, error), param=name)
    if callable(says.text):
        return invalid(says.text(error), param=name)
    return invalid(
        says.text.format(name=name, value=brief(value), type=type(value).__name__), param=name
    )


_TYPE_WORDS = {
    "int_type": "an integer",
    "bool_type": "a boolean",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
}


def _wording(where: str, error: ErrorDetails) -> str:
    """The generic wording of a refusal, by pydantic's error type."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind == "missing":
        return f"`{where}` is required"
    if kind in _TYPE_WORDS:
        return f"`{where}` must be {_TYPE_WORDS[kind]}, got {type(value).__name__}"
    if kind == "greater_than_equal":
        return f"`{where}` must be at least {ctx['ge']}, got {brief(value)}"
    if kind in ("too_short", "string_too_short"):
        return f"`{where}` must not be empty"
    if kind == "literal_error":
        return f"`{where}` must be {ctx['expected']}, got {brief(value)}"
    return f"`{where}`: {error['msg']}"


@cache
def _says(shape: type[Wire], name: str) -> Says | None:
    field = shape.model_fields.get(name)
    if field is None:
        return None
    return _find_says([*field.metadata, field.annotation])


def _find_says(items: Sequence[Any]) -> Says | None:
    """The outermost `Says` (breadth first): the field's own wording wins over its items'."""
    for item in items:
        if isinstance(item, Says):
            return item
    inner = [arg for item in items for arg in get_args(item)]
    return _find_says(inner) if inner else None


def forbidden_text(where: str, found: re.Match[str]) -> str:
    what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
    return f"`{where}` contains {what} at position {found.start()}"


def check_text(text: str, where: str, param: str) -> None:
    """For text composed after validation (rerank's `rank_fields`): no NUL, no lone
    surrogate."""
    found = _FORBIDDEN.search(text)
    if found:
        raise invalid(forbidden_text(where, found), param=param)


# -- /openapi.json ----------------------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # titles repeat the field names


def request_schemas(
    declared: Sequence[type[Wire]], settings: Settings, models: Sequence[str]
) -> tuple[dict[type[Wire], dict[str, Any]], dict[str, dict[str, Any]]]:
    """`#/components/schemas` references for each shape, and the components themselves, with
    the settings' limits as `maxItems` and the served names as `model`'s enum."""
    refs, defs = models_json_schema(
        [(s, "validation") for s in declared],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Generator,
    )
    components = _apply(defs.get("$defs", {}), settings, list(models))
    return {s: refs[(s, "validation")] for s in declared}, components


def _apply(node: Any, settings: Settings, models: list[str]) -> Any:
    if isinstance(node, list):
        return [_apply(item, settings, models) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _apply(v, settings, models)
        for k, v in node.items()
        if k not in (_LIMIT_KEY, _MODELS_KEY)
    }
    if _LIMIT_KEY in node:
        out["maxItems"] = getattr(settings, node[_LIMIT_KEY])
    if node.get(_MODELS_KEY) and models:
        out["enum"] = models
    return out


# -- response shapes --------------------------------------------------------------------------


class Answer(BaseModel):
    """A response body's shape, declared beside its request's: /openapi.json describes the
    response with it (`response_schemas`); handlers build the body itself, and a test checks
    every route's live body against the document."""

    # TEI's `/info` has fields named `model_*`.
    model_config = ConfigDict(protected_namespaces=())


class ErrorDetail(Answer):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(Answer):
    """The OpenAI error envelope, every error's body outside TEI's routes (on the rerank
    routes and `/embed` with `texts` it also carries `detail`, the message)."""

    error: ErrorDetail


def response_schemas(
    declared: Sequence[type[BaseModel]],
) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, dict[str, Any]]]:
    """`#/components/schemas` references for each response shape, and the components."""
    refs, defs = models_json_schema(
        [(s, "serialization") for s in declared],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Generator,
    )
    return {s: refs[(s, "serialization")] for s in declared}, defs.get("$defs", {})
