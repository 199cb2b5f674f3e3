"""`embedding-gateway embed INPUT --output OUT`: the subcommand's arguments and its run.

The engine is built as the server builds it (the same settings, YAML file, engine options and
`build_registry`), and each text becomes a prompt as `/v1/embeddings` makes it
(`gateway.inputs.engine_call`: the model's prompt for `--input-type` or a virtual model name,
the length policy), so a vector here equals the API's for the same text and options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.bulk import BulkError, outputs, sources
from gateway.bulk.checkpoint import Checkpoint
from gateway.bulk.orphans import OrphanGuard, child_pids
from gateway.bulk.pipeline import Job, Result, run
from gateway.bulk.progress import MODES, Progress
from gateway.config import (
    OPTIONS,
    ConfigError,
    ModelConfig,
    Option,
    Settings,
    load_settings,
)
from gateway.config import (
    add_arguments as add_config_arguments,
)
from gateway.engines import build_registry, prepare_process
from gateway.errors import APIError
from gateway.http.tracing import start_tracing
from gateway.serving.inputs import INPUT_TYPES, Truncation, prompt_template

log = logging.getLogger("gateway.bulk")

# Settings the subcommand takes: how to build the engine, not how to serve HTTP.
_SETTINGS = {"config", "log_level", "engine", "cpu_threads", "otlp_endpoint"}
_MODEL_FILE_HASH_MAX = 4 << 20  # bytes of a model file hashed whole; bigger: head and tail
DESCRIPTION = """\
Embed every document of INPUT with the in-process engine (no HTTP server) and write the
vectors to OUT. INPUT: a text file (one document per line), JSONL, CSV or Parquet (the text in
--text-field), or - for stdin. OUT: .npy (vectors in input order), .parquet or .jsonl (id and
vector; with --outputs, also the sparse vector and the token vectors). The model is built and the texts are prompted exactly as `embedding-gateway serve`
does, from the same options and YAML file.

The run is checkpointed in OUT.partial/: stop it (Ctrl-C, a kill, a crash) and run the same
command again to resume where it stopped. A changed input, model or option is refused rather
than mixed in.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("input", metavar="INPUT", help="documents to embed; - reads stdin")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="where to write the vectors (.npy, .parquet or .jsonl)",
    )
    bulk = parser.add_argument_group("input and output")
    bulk.add_argument(
        "--input-format",
        choices=sources.FORMATS,
        help="default: from INPUT's suffix (.txt, .jsonl, .csv, .parquet); stdin: text",
    )
    bulk.add_argument("--output-format", choices=outputs.FORMATS, help="default: from OUT's suffix")
    bulk.add_argument(
        "--text-field",
        default="text",
        help="JSONL field or CSV/Parquet column holding the text (default text)",
    )
    bulk.add_argument(
        "--id-field",
        help="JSONL field or CSV/Parquet column holding each "
        "document's id (as a string); default: the row number from 0",
    )
    bulk.add_argument(
        "--max-document-chars",
        type=int,
        default=sources.MAX_DOCUMENT_CHARS,
        metavar="N",
        help=f"most characters in one document (default {sources.MAX_DOCUMENT_CHARS:,}); a "
        "longer one, or a line or CSV field too long to hold one, stops the run naming its "
        "row, having read no more of it than this bound",
    )
    bulk.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="folder for the resumable state (default OUT.partial)",
    )
    bulk.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished run in the checkpoint folder and start over",
    )
    bulk.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    bulk.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="auto (default): a bar on a terminal, log lines otherwise",
    )
    bulk.add_argument(
        "--progress-interval-s",
        type=float,
        default=10.0,
        help="seconds between progress log lines (default 10)",
    )
    request = parser.add_argument_group("embedding (as the /v1/embeddings fields)")
    request.add_argument(
        "--outputs",
        # Not `outputs`: that is the model option `--model-outputs` (what the model computes).
        dest="write_outputs",
        default="dense",
        metavar="KINDS",
        help="what to write per document, a comma list of "
        f"{', '.join(outputs.KINDS)} (default dense): the vector, the sparse vector "
        "(sparse_embedding) and the token vectors (colbert_vecs), from the same prompts; "
        "sparse and multivector need .parquet or .jsonl and a model that computes them",
    )
    request.add_argument(
        "--input-type", choices=INPUT_TYPES, help="apply the model's prompt for this kind of text"
    )
    request.add_argument(
        "--dimensions", type=int, help="keep the first N components and L2-renormalize (Matryoshka)"
    )
    request.add_argument(
        "--output-dtype",
        choices=outputs.DTYPES,
        default="float32",
        help="the dense vectors' type in OUT: float32 (default), float16, or int8, uint8, "
        "binary, ubinary quantised as the API's output_dtype (binary, ubinary: d/8 packed "
        "bytes); sparse and token vectors stay float32",
    )
    request.add_argument(
        "--truncate-prompt-tokens",
        type=int,
        metavar="N",
        help="cut every text to N tokens (-1: the model's window); see "
        "--truncate for the side and the default policy",
    )
    feeding = parser.add_argument_group("feeding the engine")
    feeding.add_argument(
        "--batch-tokens",
        type=int,
        help="about this many tokens per engine "
        "call (default: the model's --max-num-batched-tokens)",
    )
    feeding.add_argument(
        "--batches-in-flight",
        type=int,
        default=4,
        help="engine calls in flight at once, so the engine never waits (default 4)",
    )
    engine = parser.add_argument_group(
        "model and engine (as for `serve`; --model also takes a name from --config's list)"
    )
    add_config_arguments(engine, names=_SETTINGS | {o.name for o in _model_options()})


def _model_options() -> list[Option]:
    return [o for o in OPTIONS if o.scope == "model"]


@dataclass(frozen=True)
class Plan:
    """Everything decided before the engine starts."""

    settings: Settings
    model: ModelConfig
    name: str
    input_format: str
    output_format: str
    output: Path
    folder: Path
    length: Truncation
    outputs: tuple[str, ...] = ("dense",)


def main(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run the subcommand; 0 when OUT is complete, 1 on a failure, 2 on a usage error, 130
    when interrupted (the work so far is kept for the next run)."""
    environ = os.environ if environ is None else environ
    try:
        plan = make_plan(args, environ)
    except (ConfigError, BulkError, APIError) as exc:
        print(f"embedding-gateway embed: {_message(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=plan.settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        checkpoint = Checkpoint.open(plan.folder)
    except BulkError as exc:
        print(f"embedding-gateway embed: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(plan, args, checkpoint)
    except BulkError as exc:
        print(f"embedding-gateway embed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            f"embedding-gateway embed: interrupted; {checkpoint.documents:,} documents are "
            f"saved in {plan.folder}: run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        checkpoint.close()


def make_plan(args: argparse.Namespace, environ: Mapping[str, str]) -> Plan:
    settings, model, name = select_model(args, environ)
    output = Path(args.output)
    folder = (
        Path(args.checkpoint_dir)
        if args.checkpoint_dir
        else output.with_name(output.name + ".partial")
    )
    out_format = outputs.output_format(args.output, args.output_format)
    kinds = output_kinds(args.write_outputs, out_format)
    if out_format == "npy" and args.id_field:
        raise BulkError(
            "a .npy file holds vectors only; write .parquet or .jsonl to keep --id-field's ids"
        )
    if output.exists() and not folder.exists() and not args.overwrite:
        raise BulkError(f"{output} exists; pass --overwrite to replace it")
    if args.dimensions is not None and args.dimensions < 1:
        raise BulkError(f"--dimensions must be at least 1, got {args.dimensions}")
    for flag in ("batch_tokens", "batches_in_flight", "max_document_chars"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise BulkError(f"--{flag.replace('_', '-')} must be at least 1")
    # The API's length rules: a token cap alone truncates the end; the model's own policy
    # (--truncate) picks the side and applies when no cap is given.
    policy = model.policy.truncate
    cap = args.truncate_prompt_tokens
    if cap is not None and cap != -1 and cap < 1:
        raise BulkError(f"--truncate-prompt-tokens must be -1 or at least 1, got {cap}")
    length = Truncation.of(None if policy == "none" else policy, cap)
    return Plan(
        settings,
        model,
        name,
        sources.input_format(args.input, args.input_format),
        out_format,
        output,
        folder,
        length,
        kinds,
    )


def output_kinds(given: str, out_format: str) -> tuple[str, ...]:
    """`--outputs` as a tuple in `outputs.KINDS` order, each one checked against OUT's format."""
    named = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in named if name not in outputs.KINDS]
    if unknown or not named:
        raise BulkError(
            f"--outputs takes a comma list of {', '.join(outputs.KINDS)}, got {given!r}"
        )
    for kind in named:
        if out_format not in outputs.TAKEN_BY[kind]:
            raise BulkError(
                f"--outputs {kind}: a .{out_format} file cannot hold it; write "
                f"{' or '.join('.' + f for f in outputs.TAKEN_BY[kind])}"
            )
    return tuple(kind for kind in outputs.KINDS if kind in named)


def select_model(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Settings, ModelConfig, str]:
    """The settings with the one model to run, and the name it was asked by. `--model` is a
    name or alias from the configured models (a prompt alias applies its prompt), else a
    folder or hub id as for `serve`."""
    known = _SETTINGS | {o.name for o in _model_options()}
    cli = {k: v for k, v in vars(args).items() if k in known}
    wanted = cli.pop("model", None)
    settings = load_settings(cli, environ)
    if wanted is None:
        if len(settings.models) != 1:
            raise ConfigError(
                f"--model: the configuration serves {len(settings.models)} "
                f"models; name one of {[m.name for m in settings.models]}"
            )
        model, name = settings.models[0], settings.models[0].name
    else:
        found = [m for m in settings.models if wanted in m.all_names]
        if found:
            model, name = found[0], wanted
        else:
            configured = cli.get("config") or environ.get("GATEWAY_CONFIG")
            if configured and not Path(wanted).exists() and "/" not in wanted:
                names = sorted(n for m in settings.models for n in m.all_names)
                raise ConfigError(
                    f"--model: {wanted!r} is none of the configured models {names}, nor a folder"
                )
            settings = load_settings({**cli, "model": wanted}, environ)
            model, name = settings.models[0], settings.models[0].name
    return replace(settings, models=(model,)), model, name


def _run(plan: Plan, args: argparse.Namespace, checkpoint: Checkpoint) -> int:
    source = sources.open_source(
        args.input,
        plan.input_format,
        text_field=args.text_field,
        id_field=args.id_field,
        spool=plan.folder / "stdin.spool",
        max_chars=args.max_document_chars,
    )
    checkpoint.begin(fingerprint_parts(plan, source, args), restart=args.restart)
    if checkpoint.documents:
        log.info(
            "resuming: %d of %d documents already embedded", checkpoint.documents, source.documents
        )
    progress = None
    if checkpoint.documents < source.documents or checkpoint.dimension is None:
        progress = Progress(
            source.documents,
            checkpoint.documents,
            mode=args.progress,
            interval_s=args.progress_interval_s,
        )
        try:
            asyncio.run(_embed(plan, args, source, checkpoint, progress))
        finally:
            progress.close()
            gc.collect()  # vLLM's AsyncLLM.__del__ complains when left to interpreter exit
    if checkpoint.documents != source.documents:
        raise BulkError(
            f"internal error: {checkpoint.documents} of {source.documents} documents embedded"
        )
    writing = time.monotonic()
    outputs.write(
        checkpoint.tables(),
        plan.output_format,
        plan.output,
        rows=checkpoint.documents,
        dimension=checkpoint.dimension or 0,
        dtype=args.output_dtype,
        kinds=plan.outputs,
        token_dimension=checkpoint.token_dimension,
    )
    checkpoint.remove()
    # From the engine being ready to the last chunk committed, plus writing the output
    # (engine start and shutdown excluded): what the benchmark compares with the engine alone.
    seconds = (
        time.monotonic()
        - writing
        + (progress.finished - progress.started if progress and progress.finished else 0.0)
    )
    embedded = progress.documents if progress else 0
    rate = embedded / seconds if seconds else 0.0
    written = {
        "dense": f"vectors of dimension {checkpoint.dimension}",
        "sparse": "sparse vectors",
        "multivector": f"token vectors of dimension {checkpoint.token_dimension}",
    }
    print(
        f"embedding-gateway embed: wrote {source.documents:,} "
        f"{', '.join(written[kind] for kind in plan.outputs)} to {plan.output}; embedded {embedded:,} documents "
        f"({progress.tokens if progress else 0:,} tokens) in {seconds:.2f} s after the "
        f"engine started: {rate:,.1f} docs/s",
        file=sys.stderr,
    )
    return 0


async def _embed(
    plan: Plan,
    args: argparse.Namespace,
    source: sources.Source,
    checkpoint: Checkpoint,
    progress: Progress,
) -> None:
    # SIGTERM stops as Ctrl-C does: the engine is shut down and the next run resumes.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    prepare_process(plan.settings)
    registry = build_registry(plan.settings)
    guard = OrphanGuard()
    traces = start_tracing(plan.settings.otlp_endpoint)
    try:
        if not await registry.start_all():
            raise BulkError(f"the model failed to load: {registry.models[0].failure}")
        guard.guard(child_pids())
        served = registry.resolve(plan.name)
        facts = served.engine.facts
        lacking = [kind for kind in plan.outputs if kind not in facts.outputs]
        if lacking:
            raise BulkError(
                f"--outputs {','.join(lacking)}: model '{plan.name}' does not compute "
                f"{' or '.join(lacking)}; it computes: {', '.join(facts.outputs)}"
            )
        dimension = facts.dimension
        if args.dimensions is not None and args.dimensions > dimension:
            raise BulkError(
                f"--dimensions must be between 1 and the model's dimension "
                f"{dimension}, got {args.dimensions}"
            )
        if checkpoint.dimension is None and source.documents == 0:
            dense = "dense" in plan.outputs
            checkpoint.dimension = min(args.dimensions or dimension, dimension) if dense else 0
            checkpoint.token_dimension = facts.token_dimension
        # Restart the clock once the engine is up: rates measure embedding, not loading.
        progress.started = time.monotonic()
        job = Job(
            served,
            plan.name,
            args.input_type,
            plan.length,
            args.dimensions,
            batch_tokens=args.batch_tokens or plan.model.engine.max_num_batched_tokens,
            max_batch_documents=plan.model.engine.max_num_seqs,
            inflight=args.batches_in_flight,
            outputs=plan.outputs,
            settings=plan.settings,
            tracing=traces,
        )

        def commit(result: Result) -> None:
            checkpoint.commit(
                result.batch.ids,
                result.vectors,
                result.tokens,
                sparse=result.sparse,
                multivector=result.multivector,
            )
            progress.update(len(result.batch.ids), result.tokens)

        # Closed at once, also when interrupted: the generator holds the input file open.
        with contextlib.closing(source.records(checkpoint.documents)) as records:
            await run(job, records, checkpoint.documents, commit)
        progress.finished = time.monotonic()
    finally:
        await registry.shutdown_all()
        guard.release()
        if traces is not None:
            traces.shutdown()


def fingerprint_parts(
    plan: Plan, source: sources.Source, args: argparse.Namespace
) -> dict[str, Any]:
    """What the vectors depend on. Engine sizing (memory share, batch limits, feeding) is left
    out: it changes speed, not vectors, so a rerun may change it."""
    spec = plan.model.engine
    template = prompt_template(
        plan.model.policy,
        name=plan.model.policy.prompt_aliases.get(plan.name),
        input_type=args.input_type,
    )
    return {
        "input": {
            "sha256": source.sha256,
            "documents": source.documents,
            "format": source.format,
            "text_field": source.text_field,
            "id_field": source.id_field,
        },
        "model": {
            "engine": plan.settings.engine,
            "path": spec.model,
            "files": model_files_digest(spec.model),
            "dtype": spec.dtype,
            "max_model_len": spec.max_model_len,
            "hf_overrides": spec.hf_overrides,
            "trust_remote_code": spec.trust_remote_code,
            "engine_kwargs": spec.engine_kwargs,
        },
        "options": {
            "prompt": template,
            "truncate": plan.length.truncate or plan.model.policy.truncate,
            "max_tokens": plan.length.max_tokens,
            "dimensions": args.dimensions,
            # Named unless dense alone, so that a dense run's fingerprint does not depend on
            # whether --outputs was given.
            **({"outputs": list(plan.outputs)} if plan.outputs != ("dense",) else {}),
        },
    }


def model_files_digest(folder: str) -> str | None:
    """A digest of a local model folder (names, sizes, and the contents of its small files
    and the head and tail of its large ones): replaced weights or tokenizer files change it.
    None for a hub id, which names a revision already."""
    import hashlib

    root = Path(folder)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root)}\0{size}\0".encode())
        with path.open("rb") as file:
            if size <= _MODEL_FILE_HASH_MAX:
                digest.update(file.read())
            else:
                digest.update(file.read(1 << 20))
                file.seek(size - (1 << 20))
                digest.update(file.read())
    return digest.hexdigest()


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, APIError) else str(exc)
