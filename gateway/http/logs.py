"""Log format and routing: JSON lines for collectors, plain text for people, one format for
the gateway, uvicorn and vLLM, and the request id on every line written during a request.

`auto` (the default) writes JSON lines when stderr is not a terminal (a container, a file, a
pipe) and text on a terminal. The request id lives in a context variable that the request
middleware sets (`gateway.request_context`); a filter on the handler copies it onto every
record, so lines logged by any library while serving a request carry it (asyncio tasks and
`to_thread` calls inherit the context).

vLLM configures its own logger with its own format in every process it starts (the engine
core is a separate process). `route_vllm_logs` hands it a logging config file that uses this
module's handler instead, at the gateway's level, so that its startup lines come out in the
same format and obey `--log-level`. This module is imported in those processes too: it must
stay light (no starlette, no gateway imports).
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import sys
import tempfile
from typing import IO

LOG_FORMATS = ("auto", "json", "text")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_TEXT = "%(asctime)s %(levelname)s %(name)s:%(request_tag)s %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside requests) and, for the text format, a short tag."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


def resolve_format(log_format: str) -> str:
    """`json` or `text`; `auto` is text on a terminal and JSON otherwise."""
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


def formatter(kind: str) -> logging.Formatter:
    """The formatter of one format (also named by vLLM's logging config file)."""
    if kind == "json":
        # python-json-logger (already a vLLM dependency): extra= fields become JSON keys.
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            _JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # the text format's tag, and uvicorn's ANSI-coloured copy
            reserved_attrs=[*RESERVED_ATTRS, "request_tag", "color_message"],
        )
    return logging.Formatter(_TEXT)


def handler(kind: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler (on stderr by default) in format `kind`, with the request-id filter."""
    out = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(formatter(kind))
    out.addFilter(RequestIdFilter())
    return out


def configure(level: str, log_format: str, *, vllm: bool = True) -> str:
    """Route every logger through one handler at `level` (vLLM's too, when `vllm`: a server
    of fake engines starts none); returns the format chosen."""
    kind = resolve_format(log_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(kind))
    root.setLevel(level.upper())
    if vllm:
        route_vllm_logs(level, kind)
    return kind


def route_vllm_logs(level: str, kind: str) -> None:
    """Make vLLM (in this process and those it starts) log through `handler(kind)`.

    An operator's own VLLM_LOGGING_CONFIG_PATH or VLLM_CONFIGURE_LOGGING=0 wins."""
    if "VLLM_LOGGING_CONFIG_PATH" in os.environ or os.environ.get("VLLM_CONFIGURE_LOGGING") == "0":
        return
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"gateway": {"()": "gateway.http.logs.handler", "kind": kind}},
        "loggers": {"vllm": {"handlers": ["gateway"], "level": level.upper(), "propagate": False}},
    }
    fd, path = tempfile.mkstemp(prefix="embedding-gateway-vllm-logging-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(config, out)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level.upper())
    # Only the process that wrote it removes it; spawned workers and engines inherit the path.
    owner = os.getpid()
    atexit.register(_remove_if_owner, path, owner)
    vllm_logger = logging.getLogger("vllm")
    if "vllm" in sys.modules:  # already configured by vLLM's import: re-route it now
        for old in list(vllm_logger.handlers):
            vllm_logger.removeHandler(old)
        vllm_logger.addHandler(handler(kind))
        vllm_logger.setLevel(level.upper())
        vllm_logger.propagate = False


def _remove_if_owner(path: str, owner: int) -> None:
    if os.getpid() != owner:
        return
    try:
        os.remove(path)
    except OSError:
        pass
