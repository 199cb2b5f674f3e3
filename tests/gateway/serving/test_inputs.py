"""Prompt templates, virtual model names, input_type and the request length policy over the
fake engine: what reaches the engine, and what the client is told."""

from __future__ import annotations

import pytest

from adapters.base import EmbedOptions
from adapters.fake import FakeEngine
from gateway.config import InputPolicy
from gateway.serving.inputs import apply_template, prompt_template
from tests.conftest import make_client, wait_ready

POLICY = InputPolicy(
    prompts={"query": "query: ", "passage": "passage: ", "qwen": "Instruct: find\nQuery: {text}"},
    prompt_aliases={"fake-query": "query", "fake-qwen": "qwen"},
)


def post(client, **body):
    return client.post("/v1/embeddings", json={"model": "fake", **body})


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_model_len=8)


@pytest.fixture
def client(engine):
    with make_client(engine, POLICY) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.mark.parametrize(
    "model, sent",
    [
        ("fake-query", "query: hi"),
        ("fake-qwen", "Instruct: find\nQuery: hi"),
        ("fake", "hi"),
    ],
)
def test_virtual_names_apply_their_prompt(client, engine, model, sent) -> None:
    response = post(client, model=model, input="hi")
    assert response.status_code == 200
    assert response.json()["model"] == model
    assert engine.calls == [[sent]]


@pytest.mark.parametrize(
    "input_type, sent",
    [
        ("query", "query: hi"),
        ("search_query", "query: hi"),
        ("SEARCH_QUERY", "query: hi"),
        ("document", "passage: hi"),
        ("search_document", "passage: hi"),
        ("classification", "hi"),
        ("clustering", "hi"),
    ],
)
def test_input_type_picks_the_prompt(client, engine, input_type, sent) -> None:
    assert post(client, input=["hi"], input_type=input_type).status_code == 200
    assert engine.calls == [[sent]]


def test_input_type_wins_over_a_virtual_name(client, engine) -> None:
    post(client, model="fake-query", input="hi", input_type="document")
    assert engine.calls == [["passage: hi"]]


def test_model_without_prompts_accepts_input_type(engine) -> None:
    with make_client(engine) as client:
        wait_ready(client)
        assert post(client, input="hi", input_type="search_query").status_code == 200
    assert engine.calls == [["hi"]]


def test_unknown_input_type_is_400(client) -> None:
    response = post(client, input="hi", input_type="image")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_type"


def test_usage_counts_the_templated_tokens(client) -> None:
    # fake tokens: whitespace words + 2 specials; "query: a b" is 3 words
    assert post(client, input="a b", input_type="query").json()["usage"]["prompt_tokens"] == 5


def test_virtual_names_are_listed(client) -> None:
    ids = {m["id"]: m["root"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {"fake": "fake", "fake-query": "fake", "fake-qwen": "fake"}


def test_prompt_on_cl100k_ids_applies_to_the_decoded_text(client, engine) -> None:
    assert post(client, input=[[15339, 1917]], input_type="query").status_code == 200
    assert engine.calls == [["query: hello world"]]


def test_prompt_on_native_ids_is_400(engine) -> None:
    with make_client(engine, InputPolicy(token_ids="native", prompts={"query": "q: "})) as client:
        wait_ready(client)
        response = post(client, input=[[1, 2]], input_type="query")
    assert response.status_code == 400


def test_templates() -> None:
    assert apply_template("query: ", "x") == "query: x"
    assert apply_template("A {text} B", "x") == "A x B"
    assert prompt_template(POLICY, name=None, input_type=None) is None
    assert prompt_template(InputPolicy(), name=None, input_type="query") is None


# -- length policy ----------------------------------------------------------------------------

LONG = "w " * 10  # 12 fake tokens against a window of 8


def test_too_long_is_400_with_counts(client) -> None:
    response = post(client, input=["a", LONG])
    assert response.status_code == 400
    assert "input 1 has 12 tokens" in response.json()["error"]["message"]
    assert "at most 8" in response.json()["error"]["message"]


@pytest.mark.parametrize("truncate", ["end", "END", "start", "START"])
def test_request_truncation_is_reported(client, engine, truncate) -> None:
    response = post(client, input=[LONG, "a", LONG], truncate=truncate)
    assert response.status_code == 200
    assert response.headers["x-truncated-inputs"] == "0,2"
    assert response.json()["usage"]["prompt_tokens"] == 8 + 3 + 8
    # The engine also gets the request-wide token limit (--max-request-tokens, default).
    assert engine.options == [EmbedOptions(truncate=truncate.lower(), max_total_tokens=300_000)]


def test_truncate_none_overrides_a_truncating_model(engine) -> None:
    with make_client(engine, InputPolicy(truncate="end")) as client:
        wait_ready(client)
        assert post(client, input=LONG).headers["x-truncated-inputs"] == "0"
        assert post(client, input=LONG, truncate="NONE").status_code == 400


@pytest.mark.parametrize(
    "cap, options",
    [
        (3, EmbedOptions(truncate="end", max_tokens=3, max_total_tokens=300_000)),
        (-1, EmbedOptions(truncate="end", max_tokens=None, max_total_tokens=300_000)),
    ],
)
def test_truncate_prompt_tokens(client, engine, cap, options) -> None:
    response = post(client, input=LONG, truncate_prompt_tokens=cap)
    assert response.status_code == 200
    assert engine.options == [options]
    assert response.json()["usage"]["prompt_tokens"] == (cap if cap > 0 else 8)


@pytest.mark.parametrize(
    "body",
    [
        {"truncate": "middle"},
        {"truncate": 1},
        {"truncate_prompt_tokens": 0},
        {"truncate_prompt_tokens": 9},
    ],
)
def test_bad_length_fields_are_400(client, body) -> None:
    assert post(client, input="a", **body).status_code == 400
