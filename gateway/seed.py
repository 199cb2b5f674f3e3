"""The service this project grew from: `POST /embed` with `{"texts": [...]}`, answered with
`{"embeddings": [[...], ...]}`. It served one model and had no `model` field; here the
default model answers (`model` may name another)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.schemas import Limit, Model, Says, Text, Wire


class SeedEmbedRequest(Wire):
    """`POST /embed` with `texts`."""

    model: Model | None = None
    texts: Annotated[
        list[Text],
        Field(min_length=1),
        Limit("max_inputs"),
        Says("`texts` is required: a non-empty list of strings"),
    ]
