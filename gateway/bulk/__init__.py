"""`embedding-gateway embed`: embed a whole file of documents with the in-process engine.

sources.py    input files (text lines, JSONL, CSV, Parquet, stdin) -> (id, text) records
checkpoint.py the resumable run folder: ordered chunk files, a manifest, the fingerprint
pipeline.py   token-budgeted batches, several in flight, committed in order
progress.py   a tqdm bar on a terminal, periodic log lines otherwise
outputs.py    chunks -> the final .npy, .parquet or .jsonl file
orphans.py    a watcher that ends the engine's processes if the command is SIGKILLed
command.py    the subcommand's arguments and the run from argv to output
"""


class BulkError(Exception):
    """The run cannot go on; the message says why and what to do (the CLI prints it)."""
