"""Hugging Face text-embeddings-inference (TEI): request shapes of its native routes and the
bare answers its clients read (`huggingface_hub.InferenceClient`, LlamaIndex
`TextEmbeddingsInference`, plain HTTP). Field names, defaults and answers follow TEI's
router/src/http/types.rs; TEI serves one model, so `model` is an optional extension here (the
default model when absent). Token-id `inputs` are not accepted: send text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from adapters.base import Tokens
from gateway.config import InputPolicy, Settings
from gateway.errors import invalid
from gateway.inputs import apply_template
from gateway.registry import ServedModel
from gateway.schemas import Limit, Model, Says, Text, Truncation, Wire, one_of

_DIRECTIONS = ("right", "left")
Direction = one_of(_DIRECTIONS, any_case=True)
# A non-empty, non-blank string (as rerank's query).
Query = Annotated[
    str,
    Field(pattern=r"^[^\x00]*[^\x00\s][^\x00]*$"),
    Says("`{name}` is required and must be a non-empty string"),
]
TextOrTexts = Annotated[
    Text | Annotated[list[Text], Field(min_length=1), Limit("max_inputs")],
    Says("`{name}` must be a string or a non-empty list of strings, got {value}"),
]


class _Truncating(Wire):
    model: Model | None = None
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # type: ignore[valid-type]  # a runtime Literal

    @property
    def truncation(self) -> Truncation:
        """TEI's `truncate` (absent: the model's setting) and direction: `right` cuts the
        end, `left` the start."""
        if self.truncate is None:
            return Truncation()
        if not self.truncate:
            return Truncation("none")
        return Truncation("end" if self.truncation_direction == "right" else "start")


class TeiEmbedRequest(_Truncating):
    """`POST /embed` (and `POST /`): TEI's embed request."""

    inputs: TextOrTexts
    prompt_name: str | None = None
    normalize: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TeiRerankRequest(_Truncating):
    """`POST /rerank` with `texts`: TEI's rerank request. Long texts are cut into chunks
    and scored by their best chunk, as every rerank route here does, so `truncate` changes
    nothing."""

    query: Query
    texts: Annotated[
        list[Text],
        Field(min_length=1),
        Limit("max_rerank_documents"),
        Says("`texts` is required: a non-empty list of strings"),
    ]
    raw_scores: bool = False
    return_text: bool = False


class SimilarityInput(Wire):
    source_sentence: Text
    sentences: Annotated[list[Text], Field(min_length=1), Limit("max_inputs")]


class SimilarityParameters(Wire):
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # type: ignore[valid-type]  # a runtime Literal
    prompt_name: str | None = None


class TeiSimilarityRequest(Wire):
    """`POST /similarity` (and `POST /` with an `inputs` object): cosine of each sentence
    with the source sentence (InferenceClient.sentence_similarity)."""

    model: Model | None = None
    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None

    @property
    def options(self) -> SimilarityParameters:
        return self.parameters or SimilarityParameters()


class TeiTokenizeRequest(Wire):
    """`POST /tokenize` with `inputs`: TEI's tokenize request."""

    model: Model | None = None
    inputs: TextOrTexts
    add_special_tokens: bool = True
    prompt_name: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


TokenIdList = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class TeiDecodeRequest(Wire):
    """`POST /decode`: token ids (one list, or a list of lists) back to text."""

    model: Model | None = None
    ids: Annotated[
        TokenIdList | Annotated[list[TokenIdList], Field(min_length=1), Limit("max_inputs")],
        Says(
            "`ids` must be a non-empty list of token ids (integers >= 0) or of "
            "such lists, got {value}"
        ),
    ]
    skip_special_tokens: bool = True

    @property
    def rows(self) -> list[list[int]]:
        # Validation allows all lists or all ids (both non-empty); no lists means one row.
        rows = [list(r) for r in self.ids if isinstance(r, list)]
        return rows or [[i for i in self.ids if isinstance(i, int)]]


def root_shape(body: Any) -> type[Wire]:
    """Which request `POST /` carries: an `inputs` object is sentence similarity (as
    `InferenceClient.sentence_similarity` sends it), `texts` a rerank, anything else embed."""
    if isinstance(body, dict) and isinstance(body.get("inputs"), dict):
        return TeiSimilarityRequest
    if isinstance(body, dict) and body.get("texts") is not None:
        return TeiRerankRequest
    return TeiEmbedRequest


# -- request to engine input ------------------------------------------------------------------


def with_prompt(
    policy: InputPolicy, prompt_name: str | None, texts: Sequence[str], param: str = "prompt_name"
) -> list[str]:
    """The texts with the model's prompt of that name applied (TEI's `prompt_name`)."""
    if prompt_name is None:
        return list(texts)
    template = policy.prompts.get(prompt_name)
    if template is None:
        raise invalid(
            f"`{param}` {prompt_name!r} is not one of the model's prompts {sorted(policy.prompts)}",
            param=param,
        )
    return [apply_template(template, t) for t in texts]


def cut_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first `dimensions` components, renormalised when `normalize` (TEI's order)."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    kept = vectors[:, :dimensions]
    if not normalize:
        return kept
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    renormalised: np.ndarray = kept / np.where(norms == 0, 1, norms)
    return renormalised


# -- answers ----------------------------------------------------------------------------------


def rerank_answer(
    scores: np.ndarray, texts: Sequence[str], return_text: bool
) -> list[dict[str, Any]]:
    """TEI's bare array `[{index, score, text?}]`, best score first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [
        {"index": i, "score": float(scores[i]), **({"text": texts[i]} if return_text else {})}
        for i in order
    ]


def tokens_answer(tokens: Sequence[Tokens], texts: Sequence[str]) -> list[list[dict[str, Any]]]:
    """TEI's `[[{id, text, special, start, stop}]]`: a token's `text` is its span of the
    input, or the token's own string where it has none (added special tokens)."""
    out = []
    for row, text in zip(tokens, texts):
        out.append(
            [
                {
                    "id": i,
                    "text": text[span[0] : span[1]] if span else string,
                    "special": special,
                    "start": span[0] if span else None,
                    "stop": span[1] if span else None,
                }
                for i, string, special, span in zip(row.ids, row.strings, row.special, row.offsets)
            ]
        )
    return out


def info_answer(
    served: ServedModel, names: Sequence[str], settings: Settings, version: str
) -> dict[str, Any]:
    """TEI's `GET /info` for the default model, with the server's limits; `dimension` and
    `models` (every served name) are additions."""
    facts = served.engine.facts
    spec = served.engine.spec
    model_type: dict[str, Any] = (
        {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
        if facts.scores_pairs
        else {"embedding": {"pooling": "model default"}}
    )
    return {
        "model_id": served.name,
        "model_sha": None,
        "model_dtype": spec.dtype,
        "model_type": model_type,
        "dimension": facts.dimension or None,
        "max_concurrent_requests": settings.max_inflight_inputs,
        "max_input_length": facts.max_model_len,
        "max_batch_tokens": settings.max_request_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": settings.max_inputs,
        "auto_truncate": served.policy.truncate != "none",
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
        "models": list(names),
    }
