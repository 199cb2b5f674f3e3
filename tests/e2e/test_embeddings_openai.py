"""/v1/embeddings through the real vLLM engine, called with the real openai client, compared
with the sentence-transformers reference for the same weights."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import openai
import pytest

from gateway.serving.quantize import quantize
from harness.gateway import Gateway
from tests.e2e.conftest import MINILM

TEXTS = [
    "The capital of France is Paris.",
    "hello",
    "",  # LangChain embeds the empty string for documents that tokenize to nothing
    "Embeddings map text to vectors; similar meanings land close together. " * 3,
    "Ünïcödé, 日本語 and emoji 🚀 are fine too.",
]


def as_matrix(data) -> np.ndarray:
    """openai-python decodes base64 only when the caller left encoding_format unset."""
    return np.array(
        [
            np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
            if isinstance(d.embedding, str)
            else d.embedding
            for d in data
        ]
    )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def reference(st_minilm) -> np.ndarray:
    return st_minilm.encode(TEXTS, convert_to_numpy=True)


@pytest.fixture(scope="module")
def client(gateway: Gateway):
    # Closed explicitly: a pooled socket left to the garbage collector is a ResourceWarning,
    # which the strict warning filter turns into an error at a random later test.
    with openai.OpenAI(
        base_url=gateway.openai_base_url, api_key="unused", max_retries=0
    ) as openai_client:
        yield openai_client


def test_ready_was_503_before_200(gateway: Gateway) -> None:
    assert 503 in gateway.ready_history, gateway.ready_history
    assert gateway.ready_history[-1] == 200
    first_ok = gateway.ready_history.index(200)
    assert all(status == 503 for status in gateway.ready_history[:first_ok])


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_vectors_equal_sentence_transformers(client, reference, encoding_format) -> None:
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    result = client.embeddings.create(model=MINILM, input=TEXTS, **kwargs)
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    vectors = as_matrix(result.data)
    assert vectors.shape == (len(TEXTS), 384)
    assert cosine_rows(vectors, reference).min() >= 0.9999
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_default_base64_is_what_the_client_asked_for(gateway: Gateway, reference) -> None:
    # openai-python sends encoding_format=base64 unless told otherwise; check the raw wire too.
    raw = httpx.post(
        gateway.base_url + "/v1/embeddings",
        json={"model": MINILM, "input": TEXTS[0], "encoding_format": "base64"},
    )
    assert raw.status_code == 200
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert cosine_rows(vector[None], reference[:1])[0] >= 0.9999


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_integer_dtypes_are_the_quantised_floats_of_the_same_route(client, dtype) -> None:
    floats = client.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    integers = client.embeddings.create(
        model=MINILM, input=TEXTS, encoding_format="float", extra_body={"output_dtype": dtype}
    )
    expected = quantize(np.array([d.embedding for d in floats.data], dtype=np.float32), dtype)
    assert [d.embedding for d in integers.data] == expected.tolist()
    assert integers.usage == floats.usage


def test_usage_counts_the_model_tokenizer_tokens(client, st_minilm) -> None:
    result = client.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    expected = sum(len(ids) for ids in st_minilm.tokenizer(TEXTS)["input_ids"])
    assert result.usage.prompt_tokens == expected
    assert result.usage.total_tokens == expected
    assert result.model == MINILM


def test_alias_serves_the_same_model(client, reference) -> None:
    result = client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input="hello", encoding_format="float"
    )
    assert cosine_rows(np.array([result.data[0].embedding]), reference[1:2])[0] >= 0.9999


def test_single_string_input(client, reference) -> None:
    result = client.embeddings.create(model=MINILM, input="hello")
    assert len(result.data) == 1
    assert cosine_rows(np.array([result.data[0].embedding]), reference[1:2])[0] >= 0.9999


def test_async_client_matches_reference(gateway: Gateway, reference) -> None:
    async def run() -> list:
        async with openai.AsyncOpenAI(
            base_url=gateway.openai_base_url, api_key="unused", max_retries=0
        ) as client:
            results = await asyncio.gather(
                *(client.embeddings.create(model=MINILM, input=[text]) for text in TEXTS)
            )
        return [r.data[0].embedding for r in results]

    vectors = np.array(asyncio.run(run()))
    assert cosine_rows(vectors, reference).min() >= 0.9999


def test_dimensions_truncate_and_renormalize(client, reference) -> None:
    result = client.embeddings.create(
        model=MINILM, input=TEXTS[:2], dimensions=64, encoding_format="float"
    )
    vectors = np.array([d.embedding for d in result.data])
    expected = reference[:2, :64] / np.linalg.norm(reference[:2, :64], axis=1, keepdims=True)
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


@pytest.mark.parametrize("dimensions", [0, 385])
def test_dimensions_out_of_range_is_400(client, dimensions) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input="x", dimensions=dimensions)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "dimensions"
    assert info.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_empty_list_is_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input=[])
    assert info.value.param == "input"


def test_too_long_input_is_400_with_counts(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input=["short", "word " * 400])
    message = info.value.body["message"]
    assert "input 1 has 402 tokens" in message and "at most 256" in message


def test_malformed_json_is_400_envelope(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/embeddings",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_models_lists_names_and_aliases(client) -> None:
    ids = {model.id for model in client.models.list()}
    assert {MINILM, "sentence-transformers/all-MiniLM-L6-v2"} <= ids


def test_request_token_limit_counts_the_real_tokenizer(client) -> None:
    # 2048 distinct inputs of about 252 tokens each (> 500,000 in all, > 300,000): refused
    # after tokenizing, before any engine work. Distinct, because identical inputs of a request
    # are embedded once and the limit counts the tokens the engine would read.
    texts = [f"document {i} " + "word " * 248 for i in range(2048)]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input=texts)
    assert "tokens in all, but a request may have at most 300000" in info.value.body["message"]


def test_cpu_engine_model_threads_use_every_core(gateway: Gateway) -> None:
    # vLLM's own default reserves one core for its scheduler; the gateway binds them all.
    import os

    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("thread binding applies to vLLM's CPU engine only")
    cores = sorted(os.sched_getaffinity(0))
    log = gateway.log_path.read_text()
    assert f"core ids={cores}" in log
    assert "core ids=[" + str(cores[-1]) + "]" not in log or len(cores) == 1


def test_metrics_timing_and_logs_after_a_real_embedding(gateway: Gateway) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict:
        text = httpx.get(gateway.base_url + "/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    tokens = ("embedding_gateway_tokens_total", (("model", MINILM),))
    tokenizing = ("embedding_gateway_tokenization_duration_seconds_sum", (("model", MINILM),))
    inference = ("embedding_gateway_inference_duration_seconds_sum", (("model", MINILM),))
    before = scrape()
    response = httpx.post(
        gateway.base_url + "/v1/embeddings", json={"model": MINILM, "input": TEXTS}
    )
    assert response.status_code == 200
    after = scrape()
    assert after[tokens] - before.get(tokens, 0) == response.json()["usage"]["prompt_tokens"]
    assert after[inference] > before.get(inference, 0)
    assert after[tokenizing] > before.get(tokenizing, 0)
    (build,) = [labels for name, labels in after if name == "embedding_gateway_build_info"]
    assert dict(build)["vllm_version"] and dict(build)["device"] == "cpu"
    times = {
        h: int(response.headers[h])
        for h in ("x-queue-time", "x-tokenization-time", "x-inference-time", "x-total-time")
    }
    assert times["x-inference-time"] >= 1  # a real forward pass takes milliseconds on CPU
    assert (
        times["x-total-time"]
        >= times["x-queue-time"] + times["x-tokenization-time"] + times["x-inference-time"]
    )
    # The server log is a file, so JSON lines; vLLM's own lines come through the same handler.
    lines = [
        json.loads(line)
        for line in gateway.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line["logger"].startswith("vllm") for line in lines)
    assert any(line["message"].startswith(f"model {MINILM}: warming up") for line in lines)
