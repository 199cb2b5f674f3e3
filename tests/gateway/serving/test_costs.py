"""What a request may cost, refused from the body before tokenizing or decoding (fake engine):
characters per input and per request, token ids' decoded size, rerank chunks and tokens,
admission by chunks, deep echoed documents, non-finite scores."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from adapters.base import EngineSpec
from adapters.fake import FakeEngine, fake_vector
from gateway.api.rerank import MAX_DOCUMENT_DEPTH
from gateway.config import Settings
from gateway.serving.token_ids import Cl100kDecoder
from tests.conftest import TIKTOKEN_DIR, serving

WINDOW = 64  # fake window: 16 * 64 = 1024 characters per untruncated input by default


def settings(**options) -> Settings:
    return Settings(tiktoken_cache_dir=TIKTOKEN_DIR, **options)


def engine(**options) -> FakeEngine:
    return FakeEngine(EngineSpec(name="fake", model="fake"), max_model_len=WINDOW, **options)


def error(response) -> str:
    return response.json()["error"]["message"]


def test_an_untruncated_input_past_the_character_bound_is_refused_before_tokenizing() -> None:
    fake = engine()
    with serving(settings(), fake=fake) as client:
        response = client.post("/v1/embeddings", json={"model": "fake", "input": ["a", "b" * 1025]})
    assert response.status_code == 400
    assert error(response) == (
        "input 1 has 1025 characters, more than model 'fake' accepts untruncated (1024, 16 "
        "per token of its 64-token window; --max-input-chars); shorten it, or send "
        '"truncate": "end"'
    )
    assert fake.calls == []


def test_the_character_bounds_are_options() -> None:
    with serving(settings(max_input_chars=5), fake=engine()) as client:
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": "abcdef"})
        assert refused.status_code == 400 and "(5, 16 per token" in error(refused)
    with serving(settings(max_request_chars=10), fake=engine()) as client:
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": ["abcdef"] * 2})
    assert refused.status_code == 400
    assert error(refused) == (
        "the inputs have 12 characters in all, but a request may have "
        "at most 10 (--max-request-chars)"
    )


def test_the_request_bound_derives_from_max_request_tokens() -> None:
    with serving(settings(max_request_tokens=10), fake=engine()) as client:  # 160 characters
        ok = client.post("/v1/embeddings", json={"model": "fake", "input": ["a" * 80] * 2})
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": ["a" * 81] * 2})
    assert ok.status_code == 200
    assert refused.status_code == 400 and "at most 160" in error(refused)


def test_a_huge_truncated_input_is_cut_from_a_prefix_and_embeds_as_the_whole() -> None:
    words = [f"w{i}" for i in range(700_000)]  # 5.3 MB
    huge = " ".join(words)
    fake = engine()
    with serving(settings(), fake=fake) as client:
        response = client.post(
            "/v1/embeddings", json={"model": "fake", "input": [huge, "x"], "truncate": "end"}
        )
        start = client.post(
            "/v1/embeddings", json={"model": "fake", "input": huge, "truncate": "start"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-truncated-inputs"] == "0"
    kept = ["[CLS]", *words[: WINDOW - 2], "[SEP]"]  # what truncating the whole text keeps
    assert np.allclose(response.json()["data"][0]["embedding"], fake_vector(" ".join(kept), 8))
    kept = ["[CLS]", *words[-(WINDOW - 2) :], "[SEP]"]
    assert np.allclose(start.json()["data"][0]["embedding"], fake_vector(" ".join(kept), 8))


def test_truncated_inputs_count_toward_the_request_only_up_to_the_input_bound() -> None:
    with serving(settings(max_request_chars=3000), fake=engine()) as client:
        response = client.post(
            "/v1/embeddings",
            json={"model": "fake", "input": ["word " * 100_000, "x"], "truncate": "end"},
        )
    assert response.status_code == 200, response.text  # counted as 1024 + 1


def test_token_ids_are_refused_by_their_decoded_size_before_decoding(monkeypatch) -> None:
    decoded = []
    original = Cl100kDecoder.decode

    async def spy(self, inputs):
        decoded.append(len(inputs))
        return await original(self, inputs)

    monkeypatch.setattr(Cl100kDecoder, "decode", spy)
    # id 5713 decodes to 72 characters: 15 ids make 1080 > 1024
    with serving(settings(), fake=engine()) as client:
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": [[5713] * 15]})
        ok = client.post("/v1/embeddings", json={"model": "fake", "input": [[5713] * 14]})
    assert refused.status_code == 400
    assert error(refused).startswith(
        "input 0 decodes to 1080 characters, more than model 'fake' accepts untruncated (1024"
    )
    assert ok.status_code == 200 and decoded == [1]


def test_truncated_token_ids_count_in_full_toward_the_request() -> None:
    # decoding makes the whole text even when it is then truncated
    with serving(settings(max_request_chars=7200), fake=engine()) as client:
        refused = client.post(
            "/v1/embeddings", json={"model": "fake", "input": [[5713] * 101], "truncate": "end"}
        )
        ok = client.post(
            "/v1/embeddings", json={"model": "fake", "input": [[5713] * 100], "truncate": "end"}
        )
    assert refused.status_code == 400 and "7272 characters in all" in error(refused)
    assert ok.status_code == 200


def test_decoded_sizes_are_the_decoded_bytes() -> None:
    import tiktoken

    decoder = Cl100kDecoder(TIKTOKEN_DIR)
    encoding = tiktoken.get_encoding("cl100k_base")
    texts = ["hello world", "Ünïcödé 日本語 🚀" * 3, "<|endoftext|> x"]
    ids = [encoding.encode(t, allowed_special="all") for t in texts]
    assert asyncio.run(decoder.decoded_sizes(ids)) == [len(t.encode()) for t in texts]
    assert decoder.longest >= 72


def test_a_large_decode_in_slices_equals_one_decode() -> None:
    import tiktoken

    decoder = Cl100kDecoder(TIKTOKEN_DIR)
    encoding = tiktoken.get_encoding("cl100k_base")
    text = "Ünïcödé 日本語 and emoji 🚀, " * 4000  # over 16384 ids: sliced
    ids = encoding.encode(text)
    assert len(ids) > 3 * 16384
    assert asyncio.run(decoder.decode([ids, ids[:5]])) == [text, encoding.decode(ids[:5])]


def test_native_ids_past_the_request_tokens_are_refused_before_the_engine() -> None:
    from starlette.testclient import TestClient

    from gateway.app import create_app
    from gateway.config import InputPolicy
    from gateway.serving.registry import ModelRegistry, ServedModel
    from tests.conftest import wait_ready

    fake = engine()
    registry = ModelRegistry([ServedModel("fake", (), fake, InputPolicy(token_ids="native"))])
    with TestClient(create_app(registry, settings(max_request_tokens=100))) as client:
        wait_ready(client)
        refused = client.post("/v1/embeddings", json={"model": "fake", "input": [[1] * 60] * 2})
        cut = client.post(
            "/v1/embeddings", json={"model": "fake", "input": [[1] * 90] * 2, "truncate": "end"}
        )
    assert refused.status_code == 400
    assert error(refused) == (
        "the inputs have 120 tokens in all, but a request may have at most 100"
    )
    assert cut.status_code == 400  # 2 x 64 after truncation
    assert fake.calls == []


# -- rerank ---------------------------------------------------------------------------------


def pairs(**options) -> FakeEngine:
    return FakeEngine(
        EngineSpec(name="pairs", model="pairs"), max_model_len=WINDOW, scores_pairs=True, **options
    )


def test_rerank_chunks_past_the_limit_are_refused_before_scoring() -> None:
    fake = pairs()
    documents = [" ".join(map(str, range(6000)))] * 4  # 24,000 one-token chunks
    with serving(settings(), pairs=fake) as client:
        response = client.post(
            "/v1/rerank",
            json={"model": "pairs", "query": "q", "documents": documents, "max_tokens_per_doc": 1},
        )
    assert response.status_code == 400
    assert error(response) == (
        "the documents make at least 24000 chunks of at most 1 tokens, "
        "but a request may have at most 10000 chunks"
    )
    assert fake.calls == []


def test_max_chunks_per_doc_keeps_a_request_within_the_chunk_limit() -> None:
    documents = [" ".join(map(str, range(6000)))] * 4
    with serving(settings(), pairs=pairs()) as client:
        response = client.post(
            "/v1/rerank",
            json={
                "model": "pairs",
                "query": "q",
                "documents": documents,
                "max_tokens_per_doc": 1,
                "max_chunks_per_doc": 10,
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["billed_units"]["search_units"] == 1  # 40 chunks


def test_max_request_tokens_applies_to_rerank() -> None:
    documents = ["word " * 50] * 3
    with serving(settings(max_request_tokens=100), pairs=pairs()) as client:
        response = client.post(
            "/v1/rerank", json={"model": "pairs", "query": "q q", "documents": documents}
        )
    assert response.status_code == 400
    assert error(response) == (
        "the query and documents make at least 165 tokens in all, but "
        "a request may have at most 100"
    )


def test_rerank_characters_are_bounded_before_tokenizing() -> None:
    fake = pairs()
    with serving(settings(max_request_chars=100), pairs=fake) as client:
        long_query = client.post(
            "/v1/rerank", json={"model": "pairs", "query": "q" * 1025, "documents": ["a"]}
        )
        many = client.post(
            "/v1/rerank", json={"model": "pairs", "query": "q", "documents": ["a" * 60, "b" * 40]}
        )
    assert long_query.status_code == 400 and error(long_query).startswith(
        "query 0 has 1025 characters, more than model 'pairs' accepts untruncated"
    )
    assert long_query.json()["error"]["param"] == "query"
    assert many.status_code == 400
    assert error(many) == (
        "the documents have 101 characters in all, but a request may have "
        "at most 100 (--max-request-chars)"
    )
    assert fake.calls == []


def test_rerank_admission_counts_chunks_not_documents() -> None:
    slow = pairs(latency_s=0.5)
    long_document = " ".join(map(str, range(10 * (WINDOW - 3))))  # 10 chunks
    with serving(settings(max_inflight_inputs=8), pairs=slow) as client:
        first: list = []
        thread = threading.Thread(
            target=lambda: first.append(
                client.post(
                    "/v1/rerank",
                    json={"model": "pairs", "query": "q", "documents": [long_document]},
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 5
        while slow.call_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = client.post(
            "/v1/rerank", json={"model": "pairs", "query": "q", "documents": ["a"]}
        )
        thread.join()
    assert first[0].status_code == 200  # larger than the bound: runs alone
    assert second.status_code == 429  # 10 chunks in flight + 1 > 8


def nested(depth: int) -> dict:
    document: dict = {"text": "deep"}
    node = document
    for _ in range(depth - 1):
        node["child"] = {}
        node = node["child"]
    return document


def test_a_deeply_nested_echoed_document_is_a_400_not_a_500() -> None:
    with serving(settings(), pairs=pairs()) as client:
        deep = client.post(
            "/v1/rerank", json={"model": "pairs", "query": "q", "documents": [nested(300)]}
        )
        limit = client.post(
            "/v1/rerank",
            json={"model": "pairs", "query": "q", "documents": [nested(MAX_DOCUMENT_DEPTH)]},
        )
        unechoed = client.post(
            "/v1/rerank",
            json={
                "model": "pairs",
                "query": "q",
                "documents": [nested(300)],
                "return_documents": False,
            },
        )
        ranked = client.post(
            "/v1/rerank",
            json={
                "model": "pairs",
                "query": "q",
                "documents": [nested(900)],
                "rank_fields": ["child"],
                "return_documents": False,
            },
        )
    assert deep.status_code == 400
    assert error(deep) == (
        f"`documents[0]` nests more than {MAX_DOCUMENT_DEPTH} levels deep, "
        'too deep to return; send it flatter, or "return_documents": false'
    )
    assert limit.status_code == 200
    assert limit.json()["results"][0]["document"] == nested(MAX_DOCUMENT_DEPTH)
    assert unechoed.status_code == 200
    assert ranked.status_code == 400


@pytest.mark.parametrize("model", ["pairs", "emb"])
def test_a_non_finite_rerank_score_is_a_500_naming_the_document(model) -> None:
    engines = {
        "pairs": pairs(nan_marker="POISON"),
        "emb": FakeEngine(
            EngineSpec(name="emb", model="emb"), max_model_len=WINDOW, nan_marker="POISON"
        ),
    }
    with serving(settings(), **{model: engines[model]}) as client:
        response = client.post(
            "/v1/rerank", json={"model": model, "query": "q", "documents": ["fine", "POISON here"]}
        )
    assert response.status_code == 500
    assert error(response) == "the engine produced a non-finite score for document 1"
