"""`embedding-gateway embed` over the fake engine: every input and output format, the API's
options, the refusals, resuming after an interruption (in process, and after a real SIGKILL)."""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.fake import FakeEngine, fake_vector, fake_weight
from gateway.cli import main
from gateway.serving.encoding import truncate_dimensions
from gateway.serving.quantize import quantize
from tests.gateway.bulk.cli_process import embed_command, rerun, stop_midway

TEXTS = [
    "the first document",
    "",
    "a third, with punctuation!",
    "ünïcödé and 日本語",
    "the fifth one",
] + [f"document number {i} of the set" for i in range(5, 40)]
DIM = 384  # the fake engine's dimension as `--engine fake` builds it

# The command's orphan guard starts a watcher process whenever the running process has
# children (the engines; under pytest, any server an earlier test left running), and two tests
# run the command as a process of its own.
pytestmark = pytest.mark.process


def embed(*args: str | Path) -> int:
    return main(["embed", *map(str, args), "--engine", "fake", "--log-level", "warning"])


def expected(texts: list[str] = TEXTS) -> np.ndarray:
    return np.stack([fake_vector(t, DIM) for t in texts])


def write_input(folder: Path, fmt: str, texts: list[str] = TEXTS) -> Path:
    """The texts in `fmt`, with ids "id-<row>" in the column `key` and the text in `body`."""
    rows = [{"key": f"id-{i}", "body": t} for i, t in enumerate(texts)]
    if fmt == "text":
        path = folder / "docs.txt"
        path.write_text("".join(t + "\n" for t in texts))
    elif fmt == "jsonl":
        path = folder / "docs.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    elif fmt == "csv":
        import csv

        path = folder / "docs.csv"
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, ["key", "body"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path = folder / "docs.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_output(path: Path) -> tuple[list, np.ndarray]:
    if path.suffix == ".npy":
        vectors = np.load(path)
        return list(range(len(vectors))), vectors
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return table.column("id").to_pylist(), np.array(
            table.column("vector").to_pylist(), dtype=np.float32
        )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], dtype=np.float32)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("out", ["parquet", "jsonl"])
def test_every_input_format_to_every_output_with_ids(tmp_path: Path, fmt: str, out: str) -> None:
    source = write_input(tmp_path, fmt)
    output = tmp_path / f"vectors.{out}"
    assert embed(source, "-o", output, "--text-field", "body", "--id-field", "key") == 0
    ids, vectors = read_output(output)
    assert ids == [f"id-{i}" for i in range(len(TEXTS))]
    assert np.array_equal(vectors, expected())
    assert not (tmp_path / f"vectors.{out}.partial").exists()


@pytest.mark.parametrize("out", ["npy", "parquet", "jsonl"])
def test_a_text_file_to_every_output_with_row_numbers(tmp_path: Path, out: str) -> None:
    output = tmp_path / f"vectors.{out}"
    assert embed(write_input(tmp_path, "text"), "-o", output, "--batch-tokens", "12") == 0
    ids, vectors = read_output(output)
    assert ids == list(range(len(TEXTS)))
    assert vectors.dtype == np.float32 and np.array_equal(vectors, expected())


@pytest.mark.parametrize("dtype", ["float16", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("out", ["npy", "parquet", "jsonl"])
def test_output_dtype_writes_the_api_quantisation(tmp_path: Path, out: str, dtype: str) -> None:
    output = tmp_path / f"vectors.{out}"
    # 12 dimensions: binary and ubinary take ceil(12 / 8) = 2 bytes.
    args = ("-o", output, "--dimensions", "12", "--output-dtype", dtype)
    assert embed(write_input(tmp_path, "text"), *args) == 0
    floats = truncate_dimensions(expected(), 12)
    want = floats.astype(np.float16) if dtype == "float16" else quantize(floats, dtype)
    assert want.shape == (len(TEXTS), 2 if "binary" in dtype else 12)
    if out == "npy":
        got = np.load(output)
    elif out == "parquet":
        column = pq.read_table(output).column("vector")
        assert column.type == pa.list_(pa.from_numpy_dtype(want.dtype), want.shape[1])
        got = np.array(column.to_pylist(), dtype=want.dtype)
    else:
        rows = [json.loads(line)["embedding"] for line in output.read_text().splitlines()]
        if dtype != "float16":
            assert all(isinstance(value, int) for row in rows for value in row)
        got = np.array(rows).astype(want.dtype)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_an_empty_input_gets_the_output_dtype_columns(tmp_path: Path) -> None:
    source = tmp_path / "empty.txt"
    source.write_text("")
    args = ("--dimensions", "12", "--output-dtype", "binary")
    assert embed(source, "-o", tmp_path / "v.npy", *args) == 0
    empty = np.load(tmp_path / "v.npy")
    assert empty.shape == (0, 2) and empty.dtype == np.int8
    assert embed(source, "-o", tmp_path / "v.parquet", *args) == 0
    vector = pq.read_table(tmp_path / "v.parquet").schema.field("vector")
    assert vector.type == pa.list_(pa.int8(), 2)


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one\ntwo three\n")))
    assert embed("-", "-o", tmp_path / "v.npy") == 0
    assert np.array_equal(np.load(tmp_path / "v.npy"), expected(["one", "two three"]))


def test_input_type_prompt_dimensions_and_truncation_as_the_api(tmp_path: Path) -> None:
    source = write_input(tmp_path, "text", ["alpha beta gamma delta"])
    assert (
        embed(
            source,
            "-o",
            tmp_path / "v.npy",
            "--prompts",
            '{"query": "query: "}',
            "--input-type",
            "query",
            "--dimensions",
            "64",
        )
        == 0
    )
    assert np.allclose(
        np.load(tmp_path / "v.npy"),
        truncate_dimensions(expected(["query: alpha beta gamma delta"]), 64),
    )
    # Three tokens kept: [CLS] alpha [SEP], as the fake engine truncates the end.
    assert embed(source, "-o", tmp_path / "t.npy", "--truncate-prompt-tokens", "3") == 0
    assert np.array_equal(np.load(tmp_path / "t.npy"), expected(["[CLS] alpha [SEP]"]))


def test_a_virtual_model_name_from_the_config_applies_its_prompt(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "m",
                        "path": "m",
                        "prompts": {"q": "Q: "},
                        "prompt_aliases": {"m-query": "q"},
                    },
                    {"name": "other", "path": "other"},
                ]
            }
        )
    )
    source = write_input(tmp_path, "text", ["hello"])
    assert embed(source, "-o", tmp_path / "v.npy", "--config", config, "--model", "m-query") == 0
    assert np.array_equal(np.load(tmp_path / "v.npy"), expected(["Q: hello"]))
    assert embed(source, "-o", tmp_path / "w.npy", "--config", config) == 2  # which one?
    assert embed(source, "-o", tmp_path / "w.npy", "--config", config, "--model", "nope") == 2


def test_an_over_long_document_stops_the_run_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = write_input(tmp_path, "text", ["short", "a b c d e f g h"])
    assert embed(source, "-o", tmp_path / "v.npy", "--engine-kwargs", '{"max_model_len": 6}') == 1
    assert "document 1 (id 1): it has 10 tokens" in capsys.readouterr().err


def test_an_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    source, output = write_input(tmp_path, "text"), tmp_path / "v.npy"
    output.write_bytes(b"precious")
    assert embed(source, "-o", output) == 2
    assert output.read_bytes() == b"precious"
    assert embed(source, "-o", output, "--overwrite") == 0
    assert np.array_equal(np.load(output), expected())


class Interrupt(FakeEngine):
    """Ctrl-C arrives during the `at`-th engine call (counting from 1), whichever output."""

    at = 3

    def _stop_at_the_call(self) -> None:
        if self.call_count + 1 >= self.at:
            raise KeyboardInterrupt

    async def embed(self, prompts, options=None):  # type: ignore[no-untyped-def]
        self._stop_at_the_call()
        return await super().embed(prompts, options) if options else await super().embed(prompts)

    async def embed_sparse(self, prompts, options):  # type: ignore[no-untyped-def]
        self._stop_at_the_call()
        return await super().embed_sparse(prompts, options)

    async def embed_tokens(self, prompts, options):  # type: ignore[no-untyped-def]
        self._stop_at_the_call()
        return await super().embed_tokens(prompts, options)


def interrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    with monkeypatch.context() as patch:
        patch.setattr("adapters.fake.FakeEngine", Interrupt)
        return embed(*args)


def test_an_interrupted_run_resumes_without_gaps_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    source, output = write_input(tmp_path, "jsonl"), tmp_path / "v.parquet"
    args = (
        source,
        "-o",
        output,
        "--text-field",
        "body",
        "--id-field",
        "key",
        "--batch-tokens",
        "12",
        "--batches-in-flight",
        "1",
    )
    assert interrupted_run(tmp_path, monkeypatch, *args) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "v.parquet.partial" / "manifest.json").read_text())
    assert 0 < manifest["documents"] < len(TEXTS) and not output.exists()
    assert embed(*args) == 0
    assert f"embedded {len(TEXTS) - manifest['documents']} documents" in capsys.readouterr().err
    ids, vectors = read_output(output)
    assert ids == [f"id-{i}" for i in range(len(TEXTS))]
    assert np.array_equal(vectors, expected())


@pytest.mark.parametrize(
    "change, named",
    [
        (("--dimensions", "32"), "options.dimensions was null, now 32"),
        (("--engine-kwargs", '{"dimension": 16}'), "model.engine_kwargs.dimension"),
        (("--input-type", "query", "--prompts", '{"query": "q: "}'), "options.prompt"),
        ((), "input.sha256"),  # the input file itself is changed below
    ],
)
def test_a_changed_job_is_refused_not_mixed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    change: tuple,
    named: str,
) -> None:
    source, output = write_input(tmp_path, "text"), tmp_path / "v.npy"
    args = (source, "-o", output, "--batch-tokens", "12", "--batches-in-flight", "1")
    assert interrupted_run(tmp_path, monkeypatch, *args) == 130
    if not change:
        source.write_text(source.read_text() + "one more\n")
    capsys.readouterr()
    assert embed(*args, *change) == 1
    err = capsys.readouterr().err
    assert "holds an unfinished run of a different job" in err and named in err
    assert "--restart" in err and not output.exists()
    assert embed(*args, *change, "--restart") == 0


def test_a_folder_in_use_by_another_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from gateway.bulk.checkpoint import Checkpoint

    source, output = write_input(tmp_path, "text"), tmp_path / "v.npy"
    holder = Checkpoint.open(tmp_path / "v.npy.partial")
    try:
        assert embed(source, "-o", output) == 1
        assert "another run is using" in capsys.readouterr().err
    finally:
        holder.close()


def test_sigkill_midway_then_rerun_gives_the_whole_output_once(tmp_path: Path) -> None:
    """A real SIGKILL of the CLI process (fake engine, 20 ms per engine call)."""
    texts = [f"document {i} " + "word " * (i % 7) for i in range(400)]
    source, output = write_input(tmp_path, "text", texts), tmp_path / "v.jsonl"
    command = embed_command(source, output, "--progress", "log", "--progress-interval-s", "0")
    manifest = tmp_path / "v.jsonl.partial" / "manifest.json"
    stopped = stop_midway(command, tmp_path, manifest, 100, signal.SIGKILL)
    saved = stopped.saved
    assert stopped.returncode == -signal.SIGKILL and 100 <= saved < 400 and not output.exists()
    assert (
        "documents (" in stopped.stderr and "docs/s" in stopped.stderr
    )  # progress lines went to the log
    done = rerun(command, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"embedded {400 - saved} documents" in done.stderr
    ids, vectors = read_output(output)
    assert ids == list(range(400))
    assert np.array_equal(vectors, expected(texts))


def test_an_empty_input_gives_an_empty_output(tmp_path: Path) -> None:
    source = tmp_path / "empty.txt"
    source.write_text("")
    assert embed(source, "-o", tmp_path / "v.npy", "--dimensions", "16") == 0
    assert np.load(tmp_path / "v.npy").shape == (0, 16)
    assert embed(source, "-o", tmp_path / "v.parquet") == 0
    assert pq.read_table(tmp_path / "v.parquet").num_rows == 0


def test_the_model_folder_digest_sees_replaced_files(tmp_path: Path) -> None:
    from gateway.bulk.command import model_files_digest

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (5 << 20))
    before = model_files_digest(str(tmp_path))
    # The same size, another last byte: only the tail hash can tell.
    (tmp_path / "model.safetensors").write_bytes(b"\0" * ((5 << 20) - 1) + b"\1")
    assert model_files_digest(str(tmp_path)) != before
    assert model_files_digest("org/hub-id") is None


def test_sigterm_stops_like_ctrl_c_and_the_rerun_finishes(tmp_path: Path) -> None:
    texts = [f"document {i}" for i in range(300)]
    source, output = write_input(tmp_path, "text", texts), tmp_path / "v.npy"
    command = embed_command(source, output, "--progress", "none")
    manifest = tmp_path / "v.npy.partial" / "manifest.json"
    stopped = stop_midway(command, tmp_path, manifest, 50, signal.SIGTERM)
    assert stopped.returncode == 130 and "run the same command again to resume" in stopped.stderr
    done = rerun(command, tmp_path)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.load(output), expected(texts))


ALL_OUTPUTS = ("--outputs", "dense,sparse,multivector")
# The fake engine computes all three when told to.
SPARSE_MODEL = ("--engine-kwargs", '{"outputs": ["dense", "sparse", "multivector"]}')


def expected_sparse(texts: list[str], fresh_engine_at: tuple[int, ...] = (0,)) -> list[dict]:
    """The fake engine's sparse vectors: each word's id in order of first sight by the engine
    (a resumed run's engine starts afresh at its first row), weighted by the word."""
    vocabulary: dict[str, int] = {}
    vectors = []
    for row, text in enumerate(texts):
        if row in fresh_engine_at:
            vocabulary = {}
        weights = {
            vocabulary.setdefault(w, 2 + len(vocabulary)): fake_weight(w) for w in text.split()
        }
        indices = sorted(weights)
        vectors.append(
            {"indices": indices, "values": np.array([weights[i] for i in indices], np.float32)}
        )
    return vectors


def expected_tokens(text: str) -> np.ndarray:
    """The fake engine's token vectors: one per word and one for [SEP] ([CLS] left out, as
    ColBERT models leave it)."""
    words = [*text.split(), "[SEP]"]
    return np.array([fake_vector(w, DIM) for w in words], np.float32).reshape(-1, DIM)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_outputs(rows: list[dict], texts: list[str], sparse: list[dict], dense: bool) -> None:
    assert [r["id"] for r in rows] == list(range(len(texts)))
    for row, text, want in zip(rows, texts, sparse):
        assert ("embedding" in row or "vector" in row) == dense
        if dense:
            vector = row.get("embedding", row.get("vector"))
            assert np.array_equal(np.array(vector, np.float32), fake_vector(text, DIM))
        assert row["sparse_embedding"]["indices"] == want["indices"]
        assert np.array_equal(
            np.array(row["sparse_embedding"]["values"], np.float32), want["values"]
        )
        tokens = np.array(row["colbert_vecs"], np.float32).reshape(-1, DIM)
        assert np.array_equal(tokens, expected_tokens(text))


@pytest.mark.parametrize("out", ["parquet", "jsonl"])
def test_dense_sparse_and_token_vectors_of_every_document(tmp_path: Path, out: str) -> None:
    output = tmp_path / f"v.{out}"
    args = (
        "-o",
        output,
        *ALL_OUTPUTS,
        *SPARSE_MODEL,
        "--batch-tokens",
        "12",
        "--batches-in-flight",
        "1",
    )
    assert embed(write_input(tmp_path, "text"), *args) == 0
    assert_outputs(read_rows(output), TEXTS, expected_sparse(TEXTS), dense=True)


def test_parquet_column_types_and_output_dtype_on_the_dense_vector_only(tmp_path: Path) -> None:
    output = tmp_path / "v.parquet"
    args = ("-o", output, *ALL_OUTPUTS, *SPARSE_MODEL, "--output-dtype", "float16")
    assert embed(write_input(tmp_path, "text"), *args) == 0
    schema = pq.read_schema(output)
    assert schema.field("vector").type == pa.list_(pa.float16(), DIM)
    assert schema.field("sparse_embedding").type == pa.struct(
        [("indices", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))]
    )
    assert schema.field("colbert_vecs").type == pa.list_(pa.list_(pa.float32(), DIM))


def test_sparse_alone_writes_no_dense_vector(tmp_path: Path) -> None:
    output = tmp_path / "v.jsonl"
    args = (
        "-o",
        output,
        "--outputs",
        "multivector, sparse",
        *SPARSE_MODEL,
        "--batches-in-flight",
        "1",
    )
    assert embed(write_input(tmp_path, "text"), *args) == 0
    rows = read_rows(output)
    assert list(rows[0]) == ["id", "sparse_embedding", "colbert_vecs"]
    assert_outputs(rows, TEXTS, expected_sparse(TEXTS), dense=False)


def test_an_empty_input_gets_the_columns_of_every_output(tmp_path: Path) -> None:
    source = tmp_path / "empty.txt"
    source.write_text("")
    assert (
        embed(
            source, "-o", tmp_path / "v.parquet", "--outputs", "sparse,multivector", *SPARSE_MODEL
        )
        == 0
    )
    schema = pq.read_schema(tmp_path / "v.parquet")
    assert schema.names == ["id", "sparse_embedding", "colbert_vecs"]
    assert schema.field("colbert_vecs").type == pa.list_(pa.list_(pa.float32(), DIM))


@pytest.mark.parametrize(
    "outputs, message",
    [
        ("sparse", "--outputs sparse: a .npy file cannot hold it; write .parquet or .jsonl"),
        (
            "dense,colbert",
            "--outputs takes a comma list of dense, sparse, multivector, got 'dense,colbert'",
        ),
        (",", "--outputs takes a comma list"),
    ],
)
def test_outputs_a_file_cannot_hold_or_unknown_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, outputs: str, message: str
) -> None:
    assert embed(write_input(tmp_path, "text"), "-o", tmp_path / "v.npy", "--outputs", outputs) == 2
    assert message in capsys.readouterr().err


def test_an_output_the_model_lacks_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "v.jsonl"
    assert embed(write_input(tmp_path, "text"), "-o", output, "--outputs", "dense,sparse") == 1
    err = capsys.readouterr().err
    assert "--outputs sparse: model '" in err
    assert "' does not compute sparse; it computes: dense" in err
    manifest = json.loads((tmp_path / "v.jsonl.partial" / "manifest.json").read_text())
    assert manifest["documents"] == 0 and not output.exists()


def test_an_interrupted_sparse_run_resumes_without_gaps_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    source, output = write_input(tmp_path, "text"), tmp_path / "v.parquet"
    args = (source, "-o", output, "--outputs", "sparse,multivector", *SPARSE_MODEL)
    args += ("--batch-tokens", "12", "--batches-in-flight", "1")
    assert interrupted_run(tmp_path, monkeypatch, *args) == 130
    manifest = json.loads((tmp_path / "v.parquet.partial" / "manifest.json").read_text())
    saved = manifest["documents"]
    assert 0 < saved < len(TEXTS) and manifest["token_dimension"] == DIM
    # The saved chunks hold sparse and token vectors: another choice of outputs cannot mix in.
    capsys.readouterr()
    assert embed(*args[:3], "--outputs", "sparse", *args[5:]) == 1
    assert (
        'options.outputs was ["sparse", "multivector"], now ["sparse"]' in capsys.readouterr().err
    )
    assert embed(*args) == 0
    assert f"embedded {len(TEXTS) - saved} documents" in capsys.readouterr().err
    rows = read_rows(output)
    assert_outputs(rows, TEXTS, expected_sparse(TEXTS, fresh_engine_at=(0, saved)), dense=False)


def test_input_that_is_not_utf8_stops_the_run_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "docs.txt"
    source.write_bytes(b"fine\nstill fine\nlatin-1 caf\xe9\n")
    assert embed(source, "-o", tmp_path / "v.npy") == 1
    err = capsys.readouterr().err
    assert f"{source}: line 3 is not UTF-8" in err and "Traceback" not in err


def test_a_document_past_max_document_chars_stops_the_run_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = write_input(tmp_path, "jsonl", ["short", "x" * 101])
    args = ("-o", tmp_path / "v.npy", "--text-field", "body", "--max-document-chars", "100")
    assert embed(source, *args) == 1
    assert "line 2 has a text of 101 characters" in capsys.readouterr().err
