"""A malformed-input corpus over every route of the app's route table.

Generic cases (bad JSON, non-objects, wrong content types, 10 MB bodies plain and chunked,
deep nesting, odd unicode, wrong methods) apply to every route by its methods, so routes
added later (rerank) are covered without editing this file; field-level cases cover the
embeddings body. Each case says whether only a 4xx is acceptable or a 2xx also is (inputs
that are odd but valid). A 5xx is never acceptable.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx
from starlette.routing import Route

JSON = {"content-type": "application/json"}
MB = 1024 * 1024


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    chunked: bool = False  # send `body` as a chunked stream
    may_succeed: bool = False  # a 2xx is also a correct answer

    def content(self) -> bytes | Iterator[bytes] | None:
        if not self.chunked or self.body is None:
            return self.body
        body = self.body
        return (body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024))


def _dump(value: object) -> bytes:
    return json.dumps(value).encode()


BAD_JSON = [
    b"",
    b" ",
    b"{",
    b'{"model": ',
    b"nul",
    b"[",
    b'{"a": 1,}',
    b"'single'",
    b'{"model": "fake", "input": "a"}}',
    b"\xff\xfe{}",
    b"NaN",
    b'{"model": NaN}',
    b"Infinity",
    b'{"a": 1e999999}',
    b'\xef\xbb\xbf{"model": "fake"}',
    b'{"input": "\xc3"}',
    b'{"input": "\\x41"}',
    b'{"input": "\\u12"}',
    b'{"model": "fake" "input": "a"}',
    b"{" * 50,
]
NOT_OBJECTS = [b"[]", b'"str"', b"1", b"null", b"true", b'[{"model": "fake"}]', b"{}", b'{"": ""}']
CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; b=x",
    "application/xml",
    "application/json-patch+json",
    "",
    "json",
    "*/*",
]


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def generic_cases(route: Route, model: str) -> Iterator[Case]:
    path = route.path.replace("{model:path}", model)
    methods = route.methods - {"HEAD"}
    good = _dump(
        {"model": model, "input": "ok", "texts": ["ok"], "query": "ok", "documents": ["ok"]}
    )
    for other in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - methods):
        yield Case(f"method {other}", other, path, good)
    big = b'{"model": "' + model.encode() + b'", "input": "' + b"a" * (10 * MB) + b'"}'
    yield Case("10 MB body", min(methods), path, big)
    # A GET never reads its body, so a streamed one is never buffered: a 200 is fine there.
    yield Case(
        "10 MB chunked body",
        min(methods),
        path,
        big,
        chunked=True,
        may_succeed=min(methods) == "GET",
    )
    if "POST" not in methods:
        yield Case("query junk", "GET", path + "?a=%00&b=" + "x" * 2000, None, may_succeed=True)
        yield Case("ignored body", "GET", path, b"{not json", may_succeed=True)
        return
    for i, raw in enumerate(BAD_JSON):
        yield Case(f"bad JSON {i}", "POST", path, raw)
    for raw in NOT_OBJECTS:
        yield Case(f"not an object {raw[:10]!r}", "POST", path, raw)
    for content_type in CONTENT_TYPES:
        yield Case(
            f"content-type {content_type!r}",
            "POST",
            path,
            good,
            headers={"content-type": content_type} if content_type else {},
        )
    yield Case("no content-type", "POST", path, good, headers={})
    yield Case("nesting 1025", "POST", path, b'{"model": "x", "input": ' + _deep(1025) + b"}")
    yield Case("nesting 100000", "POST", path, _deep(100_000))
    yield Case("nesting 1000 body", "POST", path, b'{"x": ' + _deep(1000) + b"}")
    yield Case("chunked invalid", "POST", path, b"{" * 300_000, chunked=True)


def embeddings_cases(path: str, model: str) -> Iterator[Case]:
    def body(name: str, value: dict, may_succeed: bool = False) -> Case:
        return Case(name, "POST", path, _dump(value), may_succeed=may_succeed)

    base = {"model": model, "input": "hello"}
    for name, bad in [
        ("missing", None),
        ("null", "null"),
        ("int", 1),
        ("list", []),
        ("object", {}),
        ("empty", ""),
        ("huge", "m" * 100_000),
        ("unknown", "text-embedding-3-small"),
        ("nested", [[["x"]]]),
        ("bool", True),
    ]:
        value = {k: v for k, v in base.items() if k != "model"}
        if name != "missing":
            value["model"] = None if name == "null" else bad
        yield body(f"model {name}", value)
    inputs = [
        ("missing", ...),
        ("null", None),
        ("empty list", []),
        ("negative id", [-1]),
        ("huge id", [2**63]),
        ("float", 1.5),
        ("floats", [1.5, 2.5]),
        ("bools", [True]),
        ("nulls", [None]),
        ("object", {"a": 1}),
        ("mixed", ["a", 1]),
        ("too many", ["a"] * 2049),
        ("way too many", ["a"] * 100_000),
        ("one long input", "word " * 200_000),
        ("long inputs", ["word " * 1000] * 400),
        ("NUL", "a\x00b"),
        ("NUL in list", ["ok", "\x00"]),
        ("id out of vocab", [[10**12]]),
        ("deep list", [[[[["a"]]]]]),
        ("nested strings", [["a", "b"]]),
    ]
    for name, bad in inputs:
        value = dict(base)
        if bad is ...:
            del value["input"]
        else:
            value["input"] = bad
        yield body(f"input {name}", value)
    # Token ids are inputs too (cl100k_base ids, decoded): valid shapes may succeed, or be a
    # 400 where the server has no cl100k_base file.
    for name, ids in [
        ("token ids", [1, 2, 3]),
        ("token id lists", [[1, 2], [3]]),
        ("empty token id list", [[]]),
    ]:
        yield body(f"input {name}", {**base, "input": ids}, may_succeed=True)
    for raw in [b'"\\ud800"', b'["\\udfff"]', b'"\\ud800\\u0041"', b'"\\udc00\\ud800"']:
        yield Case(
            f"input surrogate {raw!r}",
            "POST",
            path,
            b'{"model": "' + model.encode() + b'", "input": ' + raw + b"}",
        )
    for name, value in [
        ("xml", "xml"),
        ("int", 1),
        ("list", []),
        ("upper", "FLOAT"),
        ("int8", "int8"),
        ("binary", "binary"),
        ("empty", ""),
    ]:
        yield body(f"encoding_format {name}", {**base, "encoding_format": value})
    for name, value in [
        ("zero", 0),
        ("negative", -1),
        ("huge", 10**9),
        ("string", "4"),
        ("float", 1.5),
        ("bool", True),
        ("list", []),
        ("over model", 100_000),
        ("bignum", 2**70),
    ]:
        yield body(f"dimensions {name}", {**base, "dimensions": value})
    odd_but_valid = [
        ("empty string", ""),
        ("space", " "),
        ("empty strings", ["", ""]),
        ("RTL flood", "\u202e" * 5000),
        ("ZWJ flood", "\u200d" * 5000),
        ("combining flood", "a" + "\u0301" * 5000),
        ("emoji", "🚀" * 2000),
        ("mojibake", "Ã©Ã¨Ã Ã¹ Ã¢ÃªÃ®Ã´Ã» " * 100),
        ("BOM", "\ufeffhello"),
        ("control chars", "a\x01\x02\x1f\x7fb"),
        ("private use", "\ue000\uf8ff"),
        ("noncharacters", "\ufffe\uffff"),
        ("astral", "\U0010ffff\U0001d11e"),
        ("newlines", "\r\n" * 1000),
        ("tabs", "\t" * 1000),
    ]
    for name, text in odd_but_valid:
        yield body(f"odd unicode {name}", {**base, "input": text}, may_succeed=True)
    yield body("null encoding_format", {**base, "encoding_format": None}, may_succeed=True)
    yield body("unknown fields", {**base, "foo": {"bar": [1, 2]}, "user": 1}, may_succeed=True)


def cohere_embed_cases(path: str, model: str) -> Iterator[Case]:
    base = {"model": model, "texts": ["hello"]}
    bad = [
        ("texts missing", {"model": model}),
        ("texts null", {**base, "texts": None}),
        ("texts empty", {**base, "texts": []}),
        ("texts string", {**base, "texts": "a"}),
        ("texts ints", {**base, "texts": [1, 2]}),
        ("texts NUL", {**base, "texts": ["\x00"]}),
        ("texts too many", {**base, "texts": ["a"] * 2049}),
        ("images", {"model": model, "images": ["data:image/png;base64,AAAA"]}),
        ("embedding_types bad", {**base, "embedding_types": ["xml"]}),
        ("embedding_types empty", {**base, "embedding_types": []}),
        ("embedding_types nested", {**base, "embedding_types": [["float"]]}),
        ("output_dimension 0", {**base, "output_dimension": 0}),
        ("output_dimension huge", {**base, "output_dimension": 10**6}),
        ("truncate middle", {**base, "truncate": "MIDDLE"}),
        ("input_type bad", {**base, "input_type": "sql"}),
        ("max_tokens 0", {**base, "max_tokens": 0}),
        ("model missing", {"texts": ["a"]}),
    ]
    for name, value in bad:
        yield Case(f"cohere {name}", "POST", path, _dump(value))
    yield Case(
        "cohere all types",
        "POST",
        path,
        _dump(
            {
                **base,
                "input_type": "search_query",
                "embedding_types": ["float", "int8", "uint8", "binary", "ubinary"],
            }
        ),
        may_succeed=True,
    )


def rerank_cases(path: str, model: str) -> Iterator[Case]:
    base = {"model": model, "query": "q", "documents": ["a", "b"]}
    bad = [
        ("query missing", {"model": model, "documents": ["a"]}),
        ("query empty", {**base, "query": ""}),
        ("query blank", {**base, "query": "  "}),
        ("query NUL", {**base, "query": "a\x00"}),
        ("query list", {**base, "query": ["q"]}),
        ("documents missing", {"model": model, "query": "q"}),
        ("documents empty", {**base, "documents": []}),
        ("documents string", {**base, "documents": "a"}),
        ("documents ints", {**base, "documents": [1]}),
        ("documents NUL", {**base, "documents": ["\x00"]}),
        ("documents too many", {**base, "documents": ["a"] * 1001}),
        ("document object without text", {**base, "documents": [{"title": "t"}]}),
        ("document text not a string", {**base, "documents": [{"text": 1}]}),
        ("rank_fields empty", {**base, "rank_fields": []}),
        (
            "rank_fields missing field",
            {**base, "documents": [{"a": "x"}], "rank_fields": ["b" * 10000]},
        ),
        ("top_n 0", {**base, "top_n": 0}),
        ("top_n string", {**base, "top_n": "1"}),
        ("return_documents string", {**base, "return_documents": "yes"}),
        ("max_tokens_per_doc 0", {**base, "max_tokens_per_doc": 0}),
    ]
    for name, value in bad:
        yield Case(f"rerank {name}", "POST", path, _dump(value))
    yield Case("rerank top_n over", "POST", path, _dump({**base, "top_n": 10}), may_succeed=True)


# Field-level cases of other servers' routes (TEI, vLLM, the texts API): path -> bodies
# that must be refused.
NATIVE_BAD: dict[str, list[tuple[str, object]]] = {
    "/embed": [
        ("texts empty", {"texts": []}),
        ("texts ints", {"texts": [1]}),
        ("texts NUL", {"texts": ["\x00"]}),
        ("texts too many", {"texts": ["a"] * 2049}),
        ("texts unknown model", {"texts": ["a"], "model": "nope"}),
        ("tei inputs empty", {"inputs": []}),
        ("tei inputs int", {"inputs": 1}),
        ("tei inputs ids", {"inputs": [[1, 2]]}),
        ("tei direction", {"inputs": "a", "truncation_direction": "middle"}),
        ("tei prompt_name unknown", {"inputs": "a", "prompt_name": "x" * 5000}),
        ("tei normalize string", {"inputs": "a", "normalize": "no"}),
        ("tei dimensions 0", {"inputs": "a", "dimensions": 0}),
        ("tei dimensions huge", {"inputs": "a", "dimensions": 10**9}),
        ("neither", {"input": "a"}),
    ],
    "/rerank": [
        ("tei texts empty", {"query": "q", "texts": []}),
        ("tei query blank", {"query": " ", "texts": ["a"]}),
        ("tei texts nested", {"query": "q", "texts": [["a"]]}),
        ("tei raw_scores string", {"query": "q", "texts": ["a"], "raw_scores": "y"}),
    ],
    "/similarity": [
        ("inputs string", {"inputs": "a"}),
        ("no sentences", {"inputs": {"source_sentence": "a", "sentences": []}}),
        (
            "parameters list",
            {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": []},
        ),
    ],
    "/": [
        ("empty object", {}),
        ("similarity no source", {"inputs": {"sentences": ["a"]}}),
        ("texts no query", {"texts": ["a"]}),
    ],
    "/tokenize": [
        ("tei inputs empty", {"inputs": []}),
        ("vllm prompt int", {"prompt": 1}),
        ("vllm chat", {"messages": [{"role": "user", "content": "a"}]}),
        ("neither", {"text": "a"}),
    ],
    "/decode": [
        ("ids empty", {"ids": []}),
        ("ids negative", {"ids": [-1]}),
        ("ids out of vocab", {"ids": [10**12]}),
        ("ids strings", {"ids": ["a"]}),
    ],
    "/score": [
        ("text_2 missing", {"text_1": "a"}),
        ("lengths differ", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}),
        ("queries without documents", {"queries": ["a"]}),
        ("text_1 NUL", {"text_1": "\x00", "text_2": "a"}),
    ],
    "/api/embed": [
        ("ollama model missing", {"input": "a"}),
        ("ollama unknown model", {"model": "nope", "input": "a"}),
        ("ollama other tag", {"model": "fake:v2", "input": "a"}),
        ("ollama input int", {"model": "fake", "input": 1}),
        ("ollama input ints", {"model": "fake", "input": [1, 2]}),
        ("ollama input NUL", {"model": "fake", "input": ["\x00"]}),
        ("ollama input too many", {"model": "fake", "input": ["a"] * 2049}),
        ("ollama truncate string", {"model": "fake", "input": "a", "truncate": "no"}),
        ("ollama dimensions negative", {"model": "fake", "input": "a", "dimensions": -1}),
        ("ollama dimensions huge", {"model": "fake", "input": "a", "dimensions": 10**9}),
    ],
    "/api/embeddings": [
        ("ollama prompt list", {"model": "fake", "prompt": ["a"]}),
        ("ollama unknown model", {"model": "nope", "prompt": "a"}),
    ],
    "/api/show": [
        ("ollama show nothing", {}),
        ("ollama show unknown", {"model": "nope"}),
    ],
    "/detokenize": [
        ("tokens empty", {"tokens": []}),
        ("tokens huge", {"tokens": [2**70]}),
        ("tokens negative", {"tokens": [-5]}),
    ],
}


def native_cases(path: str) -> Iterator[Case]:
    for name, value in NATIVE_BAD.get(path, []):
        yield Case(f"{path} {name}", "POST", path, _dump(value))


def unknown_path_cases() -> Iterator[Case]:
    for path in [
        "/v2/embeddings",
        "/v1/embedding",
        "/v1",
        "/",
        "/v1/models/x",
        "/admin",
        "/" + "a" * 4000,
        "/v1/embeddings/../../etc/passwd",
        "/%00",
        "/v1/chat/completions",
    ]:
        yield Case(f"unknown path {path[:30]}", "POST", path, b"{}")


def build_corpus(routes: Iterable[Route], model: str = "fake") -> list[Case]:
    cases: list[Case] = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        cases.extend(generic_cases(route, model))
        ollama = route.path.startswith("/api/")  # Ollama's shapes: NATIVE_BAD
        if route.path.endswith("/embeddings") and not ollama:
            cases.extend(embeddings_cases(route.path, model))
        if route.path.endswith("/embed") and route.path != "/embed" and not ollama:
            cases.extend(cohere_embed_cases(route.path, model))
        cases.extend(native_cases(route.path))
        if route.path.endswith("/rerank"):
            cases.extend(rerank_cases(route.path, model))
    cases.extend(unknown_path_cases())
    return cases


@dataclass
class CorpusResult:
    cases: int = 0
    must_fail: int = 0  # cases for which only a 4xx is correct
    answered_4xx: int = 0  # of those
    enveloped: int = 0  # 4xx/5xx answers in the OpenAI envelope
    errors: int = 0  # 4xx/5xx answers in all
    server_errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # must-fail cases that got a 2xx/3xx
    largest_error_body: int = 0
    statuses: Counter = field(default_factory=Counter)


def is_envelope(response: httpx.Response) -> bool:
    """The OpenAI envelope, on TEI's routes TEI's `{error, error_type}`, on Ollama's
    `{error}`."""
    try:
        body = response.json()
        error = body["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if isinstance(error, str) and response.request.url.path.startswith("/api/"):
        return set(body) == {"error"}
    if isinstance(error, str):
        return set(body) == {"error", "error_type"} and isinstance(body["error_type"], str)
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


def run_corpus(
    base_url: str, cases: list[Case], headers: dict[str, str] | None = None
) -> CorpusResult:
    result = CorpusResult()
    with httpx.Client(base_url=base_url, timeout=60, headers=headers or {}) as client:
        for case in cases:
            response = client.request(
                case.method, case.path, content=case.content(), headers=case.headers
            )
            status = response.status_code
            result.cases += 1
            result.statuses[status] += 1
            if status >= 400 and case.method != "HEAD":
                result.errors += 1
                result.enveloped += is_envelope(response)
                result.largest_error_body = max(result.largest_error_body, len(response.content))
            if status >= 500:
                result.server_errors.append(f"{case.name} {case.path}: {status}")
            if not case.may_succeed:
                result.must_fail += 1
                if 400 <= status < 500:
                    result.answered_4xx += 1
                else:
                    result.wrong.append(f"{case.name} {case.path}: {status}")
    return result
