"""Token-id inputs on /v1/embeddings, over the fake engine: cl100k_base ids become the text they
encode, native ids reach the engine unchanged, bad ids and a missing tiktoken file are 400s."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import tiktoken

from adapters.fake import FakeEngine, fake_vector
from gateway.config import InputPolicy
from gateway.serving.token_ids import Cl100kDecoder
from tests.conftest import TIKTOKEN_DIR, make_client, wait_ready

TEXTS = ["This is a test document.", "你好", "Ünïcödé and emoji 🚀"]


@pytest.fixture(scope="module")
def cl100k() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base")  # offline: TIKTOKEN_CACHE_DIR is set


def embed(client, **body) -> dict:
    response = client.post("/v1/embeddings", json={"model": "fake", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_cl100k_ids_are_embedded_as_their_text(cl100k) -> None:
    engine = FakeEngine()
    with make_client(engine) as client:
        wait_ready(client)
        body = embed(
            client, input=[cl100k.encode_ordinary(t) for t in TEXTS], encoding_format="float"
        )
    assert engine.calls == [TEXTS]
    vectors = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(vectors, [fake_vector(t, 8) for t in TEXTS], atol=1e-7)


def test_a_flat_list_of_ids_is_one_input(cl100k) -> None:
    engine = FakeEngine()
    with make_client(engine) as client:
        wait_ready(client)
        body = embed(client, input=cl100k.encode_ordinary("hello world"))
    assert engine.calls == [["hello world"]]
    assert len(body["data"]) == 1


@pytest.mark.parametrize("bad", [100256, 100300, -1, 10**18])
def test_an_id_outside_cl100k_is_400_naming_it(bad) -> None:
    with make_client(FakeEngine()) as client:
        wait_ready(client)
        response = client.post(
            "/v1/embeddings", json={"model": "fake", "input": [[15339], [1, bad]]}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert f"input 1: token id {bad} is not a cl100k_base token id" in error["message"]
    assert error["param"] == "input"


def test_missing_tiktoken_file_is_a_quick_clear_400(tmp_path) -> None:
    with make_client(FakeEngine(), tiktoken_dir=str(tmp_path)) as client:
        wait_ready(client)
        started = time.monotonic()
        response = client.post("/v1/embeddings", json={"model": "fake", "input": [[15339, 1917]]})
        elapsed = time.monotonic() - started
        texts_still_work = client.post("/v1/embeddings", json={"model": "fake", "input": "hi"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    # The folder is in the server's log, never in an answer to a client.
    assert str(tmp_path) not in message and "TIKTOKEN_CACHE_DIR" in message
    assert elapsed < 2, "must not wait on the network"
    assert texts_still_work.status_code == 200


def test_damaged_tiktoken_file_is_400_without_its_path(tmp_path, caplog) -> None:
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"bm90IGl0 0\n")
    with pytest.raises(Exception) as info:
        asyncio.run(Cl100kDecoder(str(tmp_path)).decode([[1]]))
    assert "damaged" in str(info.value) and str(tmp_path) not in str(info.value)
    assert str(tmp_path) in caplog.text


def test_a_failed_load_is_not_retried_on_every_request(tmp_path, monkeypatch) -> None:
    from gateway.serving import token_ids

    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"bm90IGl0 0\n")
    reads = []
    real = token_ids._read_encoding
    monkeypatch.setattr(token_ids, "_read_encoding", lambda path: reads.append(path) or real(path))
    decoder = Cl100kDecoder(str(tmp_path))
    for _ in range(3):
        with pytest.raises(Exception, match="damaged"):
            asyncio.run(decoder.decode([[1]]))
    assert len(reads) == 1
    monkeypatch.setattr(token_ids, "_RETRY_LOAD_S", 0.0)
    decoder._failure = (0.0, decoder._failure[1])  # the retry time has passed
    with pytest.raises(Exception, match="damaged"):
        asyncio.run(decoder.decode([[1]]))
    assert len(reads) == 2


def test_native_ids_reach_the_engine_unchanged() -> None:
    engine = FakeEngine(vocab_size=1000)
    with make_client(engine, InputPolicy(token_ids="native")) as client:
        wait_ready(client)
        body = embed(client, input=[[5, 6, 7], [999]])
    assert engine.calls == [[[5, 6, 7], [999]]]
    assert body["usage"]["prompt_tokens"] == 4


def test_native_id_outside_the_vocabulary_is_400() -> None:
    with make_client(FakeEngine(vocab_size=1000), InputPolicy(token_ids="native")) as client:
        wait_ready(client)
        response = client.post("/v1/embeddings", json={"model": "fake", "input": [[5], [1000]]})
    assert response.status_code == 400
    assert (
        "input 1: token id 1000 is outside the model's vocabulary (0 to 999)"
        in response.json()["error"]["message"]
    )


@pytest.mark.parametrize("value", [["a", [1, 2]], [[1, "a"]], [1.5], [["a"]], [True]])
def test_malformed_inputs_are_400(value) -> None:
    with make_client(FakeEngine()) as client:
        wait_ready(client)
        response = client.post("/v1/embeddings", json={"model": "fake", "input": value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_decoder_matches_tiktoken(cl100k) -> None:
    ids = [cl100k.encode_ordinary(t) for t in TEXTS]
    assert asyncio.run(Cl100kDecoder(TIKTOKEN_DIR).decode(ids)) == TEXTS


def test_large_batches_decode_the_same(cl100k) -> None:
    ids = cl100k.encode_ordinary("Embeddings map text to vectors. " * 40)
    batch = [ids] * (20000 // len(ids) + 1)  # past the inline limit: decoded in a thread
    assert asyncio.run(Cl100kDecoder(TIKTOKEN_DIR).decode(batch)) == [
        "Embeddings map text to vectors. " * 40
    ] * len(batch)
