"""Client libraries unchanged against the real engine: LangChain (cl100k token ids), LlamaIndex,
raw openai-style bodies, and the Cohere SDK; every vector compared with sentence-transformers."""

from __future__ import annotations

import base64

import cohere
import httpx
import numpy as np
import pytest
import tiktoken

from gateway.api.cohere import convert
from harness.gateway import Gateway
from tests.e2e.conftest import MINILM, MINILM_TRUNCATING
from tests.e2e.test_embeddings_openai import cosine_rows

DOCS = [
    "The capital of France is Paris.",
    "",  # LangChain embeds the empty string with a separate `input: ""` request
    "你好, Ünïcödé and emoji 🚀",
    "Embeddings map text to vectors; similar meanings land close together.",
]
# Long enough for LangChain to split it into several chunks at embedding_ctx_length=16.
LONG = (
    "Token chunking happens on the client: each chunk is embedded on its own and the client "
    "averages the chunk vectors, weighted by their token counts, then normalises the mean."
)


@pytest.fixture
def http() -> httpx.Client:
    """Handed to every client library, so that its connections are closed after the test."""
    with httpx.Client(timeout=120) as client:
        yield client


def embed_raw(gateway: Gateway, **body) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/v1/embeddings", json={"model": MINILM, **body}, timeout=60
    )


def floats(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


# -- LangChain OpenAIEmbeddings, default settings: it sends cl100k_base token ids -----------


def langchain_reference(st_minilm, text: str, ctx: int) -> np.ndarray:
    """What LangChain computes from per-chunk vectors: the token-weighted mean of the
    sentence-transformers vectors of each cl100k chunk's text, normalised."""
    encoding = tiktoken.get_encoding("cl100k_base")
    ids = encoding.encode_ordinary(text)
    chunks = [ids[i : i + ctx] for i in range(0, len(ids), ctx)]
    vectors = st_minilm.encode([encoding.decode(c) for c in chunks])
    mean = np.average(vectors, axis=0, weights=[len(c) for c in chunks])
    return mean / np.linalg.norm(mean)


def test_langchain_default_settings_equal_sentence_transformers(gateway, st_minilm, http) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MINILM,
        base_url=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        http_client=http,
    )
    assert embeddings.check_embedding_ctx_length and embeddings.tiktoken_enabled
    documents = np.array(embeddings.embed_documents(DOCS))
    query = np.array(embeddings.embed_query(DOCS[0]))
    reference = st_minilm.encode(DOCS)
    assert cosine_rows(documents, reference).min() >= 0.999
    assert cosine_rows(query[None], reference[:1])[0] >= 0.999


def test_langchain_chunked_long_text(gateway, st_minilm, http) -> None:
    from langchain_openai import OpenAIEmbeddings

    ctx = 16
    assert len(tiktoken.get_encoding("cl100k_base").encode_ordinary(LONG)) > 2 * ctx
    embeddings = OpenAIEmbeddings(
        model=MINILM,
        base_url=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        embedding_ctx_length=ctx,
        http_client=http,
    )
    vector = np.array(embeddings.embed_documents([LONG])[0])
    expected = langchain_reference(st_minilm, LONG, ctx)
    assert cosine_rows(vector[None], expected[None])[0] >= 0.999
    # and it is the original text's meaning, not garbage from misread ids
    assert cosine_rows(vector[None], st_minilm.encode([LONG]))[0] >= 0.9


# Longer than LangChain's default 8191-token chunk, so that it splits the text itself: a
# report whose sections repeat with small changes, as long documents do.
VERY_LONG = " ".join(
    f"Section {i}: the quarterly report lists revenue, costs and the outlook for the region."
    for i in range(500)
)


def test_langchain_defaults_split_a_very_long_text_on_a_truncating_model(
    gateway, st_minilm, http
) -> None:
    from langchain_openai import OpenAIEmbeddings

    assert len(tiktoken.get_encoding("cl100k_base").encode_ordinary(VERY_LONG)) > 8191
    requests: list[httpx.Request] = []
    http.event_hooks["request"].append(requests.append)
    embeddings = OpenAIEmbeddings(
        model=MINILM_TRUNCATING,
        base_url=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        http_client=http,
    )
    vector = np.array(embeddings.embed_documents([VERY_LONG])[0])
    # LangChain sent two cl100k chunks in one request; the model truncated each to its window,
    # as sentence-transformers truncates the original text.
    assert len(requests) == 1
    assert cosine_rows(vector[None], st_minilm.encode([VERY_LONG]))[0] >= 0.999


def test_langchain_defaults_on_a_non_truncating_model_get_a_400_with_counts(gateway, http) -> None:
    import openai
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MINILM,
        base_url=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        http_client=http,
    )
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents([VERY_LONG])
    # Refused before decoding: the ids' decoded size, against the model's 256-token window.
    message = info.value.body["message"]
    assert "decodes to 39482 characters" in message and "256-token window" in message


def test_out_of_vocabulary_cl100k_id_is_400(gateway) -> None:
    response = embed_raw(gateway, input=[[9906, 1917], [100300]])
    assert response.status_code == 400
    assert "token id 100300" in response.json()["error"]["message"]


# -- LlamaIndex -------------------------------------------------------------------------------


def test_llamaindex_openai_embedding(gateway, st_minilm, http) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    model = OpenAIEmbedding(
        model_name=MINILM,
        api_base=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        http_client=http,
    )
    batch = np.array(model.get_text_embedding_batch(DOCS))
    query = np.array(model.get_query_embedding("line one\nline two"))
    assert cosine_rows(batch, st_minilm.encode(DOCS)).min() >= 0.999
    # LlamaIndex sends newlines as spaces
    assert cosine_rows(query[None], st_minilm.encode(["line one line two"]))[0] >= 0.999


def test_llamaindex_openai_like_embedding(gateway, st_minilm, http) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    model = OpenAILikeEmbedding(
        model_name=MINILM,
        api_base=gateway.openai_base_url,
        api_key="unused",
        max_retries=0,
        http_client=http,
    )
    vectors = np.array(model.get_text_embedding_batch(DOCS[:2]))
    assert cosine_rows(vectors, st_minilm.encode(DOCS[:2])).min() >= 0.999


def test_request_without_encoding_format_gets_floats(gateway, st_minilm) -> None:
    vectors = floats(embed_raw(gateway, input=DOCS))
    assert cosine_rows(vectors, st_minilm.encode(DOCS)).min() >= 0.9999


# -- Instructions: virtual model names and input_type -----------------------------------------

QUESTION = "What is the capital of France?"
QWEN_STYLE = "Instruct: Given a question, retrieve passages that answer it\nQuery: " + QUESTION


@pytest.mark.parametrize(
    "alias, templated",
    [
        ("minilm-query", "query: " + QUESTION),
        ("minilm-qwen3-query", QWEN_STYLE),
    ],
)
def test_prompt_alias_embeds_the_templated_text(gateway, st_minilm, alias, templated) -> None:
    via_alias = embed_raw(gateway, model=alias, input=[QUESTION])
    plain = floats(embed_raw(gateway, input=[templated]))
    assert via_alias.json()["model"] == alias
    np.testing.assert_array_equal(floats(via_alias), plain)
    assert cosine_rows(plain, st_minilm.encode([templated]))[0] >= 0.9999
    assert via_alias.json()["usage"]["prompt_tokens"] == len(
        st_minilm.tokenizer(templated)["input_ids"]
    )


def test_prompt_aliases_are_listed(gateway) -> None:
    models = {m["id"]: m["root"] for m in httpx.get(gateway.base_url + "/v1/models").json()["data"]}
    assert models["minilm-query"] == MINILM and models["minilm-qwen3-query"] == MINILM


@pytest.mark.parametrize(
    "input_type, prefix",
    [
        ("query", "query: "),
        ("search_document", "passage: "),
        ("document", "passage: "),
        ("clustering", ""),  # no clustering prompt: the text is embedded unchanged
    ],
)
def test_input_type_selects_the_prompt(gateway, st_minilm, input_type, prefix) -> None:
    vectors = floats(embed_raw(gateway, input=[QUESTION], input_type=input_type))
    assert cosine_rows(vectors, st_minilm.encode([prefix + QUESTION]))[0] >= 0.9999


# -- Length policy ----------------------------------------------------------------------------

TOO_LONG = "word " * 400  # 402 tokens against a window of 256


def test_truncation_end_is_reported_and_keeps_the_first_tokens(gateway, st_minilm) -> None:
    response = embed_raw(gateway, input=["short", TOO_LONG, "short", TOO_LONG], truncate="END")
    assert response.headers["x-truncated-inputs"] == "1,3"
    # sentence-transformers cuts at max_seq_length=256, keeping [CLS] and [SEP]
    expected = st_minilm.encode(["short", TOO_LONG, "short", TOO_LONG])
    assert cosine_rows(floats(response), expected).min() >= 0.9999
    assert response.json()["usage"]["prompt_tokens"] == 3 + 256 + 3 + 256


def test_truncate_prompt_tokens_caps_each_input(gateway, st_minilm) -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    response = embed_raw(gateway, input=[text, "short"], truncate_prompt_tokens=6)
    assert response.headers["x-truncated-inputs"] == "0"
    assert response.json()["usage"]["prompt_tokens"] == 6 + 3
    ids = st_minilm.tokenizer(text, truncation=True, max_length=6)["input_ids"]
    expected = st_minilm.tokenizer.decode(ids[1:-1])
    assert cosine_rows(floats(response)[:1], st_minilm.encode([expected]))[0] >= 0.9999


def test_truncation_start_keeps_the_last_tokens(gateway, st_minilm) -> None:
    text = "alpha " * 300 + "the last words decide"
    response = embed_raw(gateway, input=[text], truncate="start")
    assert response.headers["x-truncated-inputs"] == "0"
    tail = " ".join(["alpha"] * 250) + " the last words decide"
    assert cosine_rows(floats(response), st_minilm.encode([tail]))[0] >= 0.9999


@pytest.mark.parametrize(
    "huge",
    [
        "* " * 3_500_000,  # 7 MB, as in reliability/costly_requests.py
        " ".join(
            f"The {i}th sentence of a very long, unbelievably dull document." for i in range(30_000)
        ),
    ],
)
def test_a_huge_truncated_input_embeds_as_sentence_transformers_truncates_it(
    gateway, st_minilm, huge
) -> None:
    # Only a prefix is tokenized (adapters/token_limits.truncation_window); the vector is
    # the one of the whole text truncated to the window.
    response = embed_raw(gateway, input=[huge], truncate="end")
    assert response.headers["x-truncated-inputs"] == "0"
    assert response.elapsed.total_seconds() < 10
    assert cosine_rows(floats(response), st_minilm.encode([huge]))[0] >= 0.9999


def test_costly_rerank_is_refused_by_its_chunks_without_holding_the_server(gateway) -> None:
    from reliability.costly_requests import costly_requests, measure

    name = "rerank 4 x 60,000 numbers, 1 token per chunk"
    path, body = costly_requests(MINILM)[name]
    cost = measure(gateway.base_url, gateway.process.pid, name, path, body)
    assert cost.status == 400, cost
    # 250 ms rather than tighter: the test machine's cores are shared with other work
    assert cost.answer_s < 10 and cost.health_max_ms < 250, cost


def test_no_header_when_nothing_is_truncated(gateway) -> None:
    response = embed_raw(gateway, input=["short"], truncate="end")
    assert response.status_code == 200 and "x-truncated-inputs" not in response.headers


# -- Cohere SDK -------------------------------------------------------------------------------

TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]


def test_cohere_v2_embed_every_type(gateway, st_minilm, http) -> None:
    client = cohere.ClientV2(base_url=gateway.base_url, api_key="unused", httpx_client=http)
    result = client.embed(
        model=MINILM, texts=DOCS, input_type="search_document", embedding_types=TYPES
    )
    expected = st_minilm.encode(["passage: " + t for t in DOCS])
    got = result.embeddings
    assert cosine_rows(np.array(got.float_), expected).min() >= 0.9999
    decoded = np.array([np.frombuffer(base64.b64decode(b), "<f4") for b in got.base64])
    np.testing.assert_array_equal(decoded, np.array(got.float_, dtype=np.float32))
    # quantized types follow the documented scheme, from the returned floats
    floats32 = np.array(got.float_, dtype=np.float32)
    for kind in ("int8", "uint8", "binary", "ubinary"):
        np.testing.assert_array_equal(
            np.array(getattr(got, kind)), np.array(convert(floats32, kind))
        )
    assert len(got.ubinary[0]) == 384 // 8
    signs = np.unpackbits(np.array(got.ubinary, dtype=np.uint8), axis=1).astype(bool)
    assert (signs == (expected > 0)).mean() > 0.99
    int8 = np.array(got.int8, dtype=np.float64)
    assert cosine_rows(int8, expected).min() >= 0.999
    assert result.meta.billed_units.input_tokens == sum(
        len(ids) for ids in st_minilm.tokenizer(["passage: " + t for t in DOCS])["input_ids"]
    )


def test_cohere_v1_embed_floats_and_by_type(gateway, st_minilm, http) -> None:
    client = cohere.Client(base_url=gateway.base_url, api_key="unused", httpx_client=http)
    plain = client.embed(model=MINILM, texts=DOCS[:2], input_type="search_query")
    assert plain.response_type == "embeddings_floats"
    expected = st_minilm.encode(["query: " + t for t in DOCS[:2]])
    assert cosine_rows(np.array(plain.embeddings), expected).min() >= 0.9999
    typed = client.embed(
        model=MINILM, texts=DOCS[:2], input_type="classification", embedding_types=["float", "int8"]
    )
    assert typed.response_type == "embeddings_by_type"
    assert (
        cosine_rows(np.array(typed.embeddings.float_), st_minilm.encode(DOCS[:2])).min() >= 0.9999
    )


def test_cohere_output_dimension_and_truncate(gateway, st_minilm, http) -> None:
    client = cohere.ClientV2(base_url=gateway.base_url, api_key="unused", httpx_client=http)
    result = client.embed(
        model=MINILM,
        texts=["short", TOO_LONG],
        input_type="classification",
        embedding_types=["float"],
        output_dimension=128,
        truncate="END",
    )
    vectors = np.array(result.embeddings.float_)
    expected = st_minilm.encode(["short", TOO_LONG])[:, :128]
    assert vectors.shape == (2, 128)
    assert cosine_rows(vectors, expected).min() >= 0.9999
    assert result.meta.warnings and "1" in result.meta.warnings[0]


def test_cohere_too_long_without_truncate_is_400(gateway, http) -> None:
    client = cohere.ClientV2(base_url=gateway.base_url, api_key="unused", httpx_client=http)
    with pytest.raises(cohere.errors.BadRequestError) as info:
        client.embed(
            model=MINILM,
            texts=[TOO_LONG],
            input_type="clustering",
            embedding_types=["float"],
            truncate="NONE",
        )
    assert "402 tokens" in info.value.body["error"]["message"]
