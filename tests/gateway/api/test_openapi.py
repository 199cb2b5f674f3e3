"""/openapi.json describes every route (tests/reliability fuzzes the server with it), and its
request bodies hold: walking the served document, every documented field is accepted with
each of its valid forms, and every constraint it states (enum, minimum, maxItems, minItems,
required, type, pattern, ...) is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route
from starlette.testclient import TestClient

from adapters.fake import FakeEngine
from gateway.api import openapi as api_openapi
from gateway.api.routes import ROUTES
from gateway.api.tei import root_shape
from gateway.api.vllm import score_shape
from gateway.app import create_app
from gateway.config import InputPolicy, Settings
from gateway.http.dialects import API, settle
from gateway.serving.registry import ModelRegistry, ServedModel
from tests.conftest import TIKTOKEN_DIR, serving, wait_ready


def test_every_route_is_described_with_its_methods(client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for route in ROUTES:
        assert isinstance(route, Route)
        described = document["paths"].get(route.path.replace(":path}", "}"))
        assert described is not None, f"{route.path} is missing from /openapi.json"
        assert set(described) == {m.lower() for m in route.methods - {"HEAD"}}, route.path
        for operation in described.values():
            assert {"200", "405", "500"} <= set(operation["responses"])


def test_limits_and_models_appear_as_constraints() -> None:
    with serving(Settings(max_inputs=7, max_rerank_documents=5, api_keys=("k",))) as client:
        document = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()
    schema = _body_schema(document, "/v1/embeddings")
    assert schema["properties"]["model"]["enum"] == ["fake"]
    assert schema["properties"]["input"]["oneOf"][1]["maxItems"] == 7
    assert _body_schema(document, "/v2/embed")["properties"]["texts"]["maxItems"] == 7
    assert _body_schema(document, "/v1/rerank")["properties"]["documents"]["maxItems"] == 5
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "401" in document["paths"]["/v1/embeddings"]["post"]["responses"]


def test_token_caps_are_minus_one_or_at_least_one(client) -> None:
    document = client.get("/openapi.json").json()
    cap = _body_schema(document, "/v1/embeddings")["properties"]["truncate_prompt_tokens"]
    assert {"const": -1, "type": "integer"} in cap["anyOf"]
    assert {"minimum": 1, "type": "integer"} in cap["anyOf"]


# -- the document's request bodies, walked ----------------------------------------------------

# (path, which of its body shapes): a path two APIs share documents one shape per API.
BODY_PATHS = [
    ("/v1/embeddings", 0),
    ("/v2/embed", 0),
    ("/v1/rerank", 0),
    ("/embed", 0),
    ("/embed", 1),
    ("/rerank", 1),
    ("/", 0),
    ("/", 1),
    ("/", 2),
    ("/similarity", 0),
    ("/tokenize", 0),
    ("/tokenize", 1),
    ("/decode", 0),
    ("/score", 0),
    ("/score", 1),
    ("/detokenize", 0),
    ("/v1/batches", 0),
    ("/api/embed", 0),
    ("/api/embeddings", 0),
    ("/api/show", 0),
]


@pytest.fixture(scope="module")
def app():
    # Small limits so that maxItems is cheap to exceed; a window long enough for every sample;
    # a prompt named as the walker's sample string, for TEI's `prompt_name`; dense, sparse and
    # token vectors, so that every rerank `mode` and every `return_*` output is accepted.
    engine = FakeEngine(max_model_len=64, outputs=("dense", "sparse", "multivector"))
    registry = ModelRegistry([ServedModel("fake", (), engine, InputPolicy(prompts={"a": "p: "}))])
    settings = Settings(max_inputs=3, max_rerank_documents=3)
    with TestClient(
        create_app(registry, settings, tiktoken_dir=TIKTOKEN_DIR), raise_server_exceptions=False
    ) as client:
        wait_ready(client)
        yield client, client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def known(app) -> dict[str, dict[str, Any]]:
    """Per path, values a field must take to be accepted that its schema cannot state: a
    batch reads a file that exists; embeddings ask for at least one output, so
    `"return_dense": false` is tried with `return_sparse`."""
    client, _ = app
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
    uploaded = client.post(
        "/v1/files", files={"file": ("in.jsonl", line)}, data={"purpose": "batch"}
    )
    return {
        "/v1/batches": {"input_file_id": uploaded.json()["id"]},
        "/v1/embeddings": {"return_sparse": True},
    }


@pytest.mark.parametrize(("path", "shape"), BODY_PATHS)
def test_every_documented_field_is_accepted_in_each_form(app, known, path, shape) -> None:
    client, document = app
    schema = _body_schema(document, path, shape)
    fixed = known.get(path, {})
    base = {**_base_body(schema), **fixed}
    tried = 0
    for name, field in schema["properties"].items():
        for value in [fixed[name]] if name in fixed else _samples(field):
            body = {**base, name: value}
            assert Draft202012Validator(schema).is_valid(body), (name, value)
            response = client.post(path, json=body)
            assert response.status_code == 200, (name, value, response.text)
            tried += 1
    assert tried >= len(schema["properties"])


@pytest.mark.parametrize(("path", "shape"), BODY_PATHS)
def test_every_documented_constraint_is_enforced(app, known, path, shape) -> None:
    client, document = app
    schema = _body_schema(document, path, shape)
    base = {**_base_body(schema), **known.get(path, {})}
    own = _dialect(path, base)
    enforced, tried = set(), 0
    for name in schema["required"]:
        body = {k: v for k, v in base.items() if k != name}
        response = client.post(path, json=body)
        if _dialect(path, body) != own:  # without it, the body is the other API's
            assert 400 <= response.status_code < 500, (name, response.text)
        else:
            _assert_refused(own, response, name, 400, (name,))
        enforced.add("required")
    for name, field in schema["properties"].items():
        check = Draft202012Validator(field)
        for keyword, value in _violations(field):
            if check.is_valid(value):
                continue  # valid under another form of the field
            response = client.post(path, json={**base, name: value})
            # An unknown model is the OpenAI contract's 404, from the registry.
            expected = 404 if name == "model" and keyword == "enum" else 400
            _assert_refused(own, response, name, expected, (name, keyword, value))
            enforced.add(keyword)
            tried += 1
    assert tried >= len(schema["properties"])
    assert _keywords(schema) <= enforced | {"const"}, _keywords(schema) - enforced


def _body_schema(document: dict, path: str, shape: int = 0) -> dict:
    schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    body = _resolve(schema["schema"], document)
    return body["anyOf"][shape] if "anyOf" in body else body


def _dialect(path: str, body: dict) -> tuple[API, Any]:
    """The API, and the shape on paths whose handler picks one by the body."""
    shape = {"/": root_shape, "/score": score_shape}.get(path, lambda _: None)(body)
    return settle({"path": path}, body).api, shape


def _assert_refused(own: tuple[API, Any], response, name: str, status: int, why: tuple) -> None:
    """A refusal in the dialect's own error body: TEI's names the field in its message."""
    if own[0] is API.TEI:
        assert response.status_code == 422, (*why, response.text)
        body = response.json()
        assert body["error_type"] == "validation" and name in body["error"], (*why, body)
        return
    if own[0] is API.OLLAMA:  # Ollama's `{"error": message}`
        assert response.status_code == status, (*why, response.text)
        assert name in response.json()["error"], (*why, response.text)
        return
    assert response.status_code == status, (*why, response.text)
    assert response.json()["error"]["param"] == name, (*why, response.text)


def _resolve(node: Any, document: dict) -> Any:
    """The schema with every `$ref` replaced by what it points to."""
    if isinstance(node, list):
        return [_resolve(item, document) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return _resolve(document["components"]["schemas"][name], document)
    return {k: _resolve(v, document) for k, v in node.items()}


def _base_body(schema: dict) -> dict:
    """The smallest valid body: each required field's first sample."""
    return {name: _sample(schema["properties"][name]) for name in schema["required"]}


def _forms(schema: dict) -> list[dict]:
    """The alternatives a value may take (`anyOf`/`oneOf` members), `null` left out."""
    members = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return [m for m in members if m.get("type") != "null"]


def _sample(schema: dict) -> Any:
    """One valid value of the first form."""
    return next(iter(_samples(schema)))


def _samples(schema: dict) -> Iterator[Any]:
    """A valid value of each form, and each enum value; `null` where the field allows it."""
    for form in _forms(schema):
        if "const" in form:
            yield form["const"]
        elif "enum" in form:
            yield from form["enum"]
        elif form.get("type", "string") == "string":  # no type: any value
            yield "a"
        elif form["type"] == "integer":
            yield form.get("minimum", 1)
        elif form["type"] == "number":
            yield float(form.get("minimum", 1))
        elif form["type"] == "boolean":
            yield False
        elif form["type"] == "array":
            for item in _samples(form["items"]):
                yield [item] * form.get("minItems", 1)
            if "maxItems" in form:
                yield [_sample(form["items"])] * form["maxItems"]
        elif form["type"] == "object":
            yield {k: _sample(v) for k, v in form.get("properties", {}).items()}
    if len(_forms(schema)) < len(schema.get("anyOf", [])):
        yield None


def _violations(schema: dict) -> Iterator[tuple[str, Any]]:
    """(keyword, value) pairs, each value breaking that keyword of one form of `schema`."""
    for form in _forms(schema):
        if "enum" in form:
            yield "enum", "not-" + form["enum"][0]
        if "const" in form:
            const = form["const"]
            yield "const", const - 1 if isinstance(const, int) else f"not-{const}"
        if "minimum" in form:
            yield "minimum", form["minimum"] - 1
        if "pattern" in form:
            yield "pattern", "a\x00b"
            yield "pattern", " "
        if "minLength" in form:
            yield "minLength", ""
        if "minItems" in form:
            yield "minItems", []
        if "maxItems" in form:
            yield "maxItems", [_sample(form["items"])] * (form["maxItems"] + 1)
        if form.get("type") == "array":
            for keyword, item in _violations(form["items"]):
                yield keyword, [item]
        if form.get("type") == "object":
            for name, field in form.get("properties", {}).items():
                for keyword, value in _violations(field):
                    yield keyword, {name: value}
        if "type" in form:
            yield "type", _WRONG_TYPE[form["type"]]


_WRONG_TYPE = {
    "string": 7,
    "integer": "7",
    "boolean": "yes",
    "array": {"a": 1},
    "object": 7,
    "number": "7",
}


def _keywords(schema: dict) -> set[str]:
    """Every constraint keyword used anywhere in a body schema."""
    found = set()
    for key, value in schema.items():
        if key in (
            "enum",
            "const",
            "minimum",
            "maxItems",
            "minItems",
            "required",
            "type",
            "pattern",
            "minLength",
        ):
            found.add(key)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, dict):
                found |= _keywords(child)
    return found


def test_openapi_document_is_built_once_per_app(client) -> None:
    with mock.patch.object(
        api_openapi, "openapi_document", wraps=api_openapi.openapi_document
    ) as build:
        first = client.get("/openapi.json")
        second = client.get("/openapi.json")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert build.call_count == 1
