"""A deterministic in-memory engine for tests and for measuring the gateway's own overhead.

Vectors depend only on the text (a seeded random unit vector), tokens are whitespace words plus
two special tokens, and latency and faults can be switched on per instance: by attribute in
tests, or through a JSON control file (re-read whenever it changes) when the engine runs in a
server process, so that the reliability battery can kill, hang or poison it mid-load:

    {"latency_s": 0.05, "dead": false, "hang": false, "nan_marker": "POISON", "fail": false}

With `stats_file` set, the engine writes its counters (calls, completed, aborted) there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections import deque
from typing import Sequence

import numpy as np

from adapters.base import (
    EmbeddingBatch,
    EngineFailure,
    EngineSpec,
    EngineUnavailable,
    InvalidInput,
    ModelFacts,
)

_CONTROLLED = ("latency_s", "dead", "hang", "nan_marker", "fail")


class FakeEngine:
    """An `Engine` whose behaviour is set by attributes: latency, start delay, faults.

    - `latency_s`: each `embed` call sleeps this long (and is cancellable meanwhile).
    - `dead`: the engine has died: calls in flight and new calls raise `EngineUnavailable`.
    - `hang`: the engine stops answering: `embed` and `check_health` never return.
    - `nan_marker`: inputs containing this text get a NaN vector.
    - `fail_with`: an exception `embed` raises (the control file's `fail` sets an EngineFailure).
    """

    def __init__(
        self,
        spec: EngineSpec | None = None,
        *,
        dimension: int = 8,
        max_model_len: int = 512,
        latency_s: float = 0.0,
        start_delay_s: float = 0.0,
        nan_marker: str | None = None,
        control_file: str | None = None,
        stats_file: str | None = None,
    ) -> None:
        self.spec = spec or EngineSpec(name="fake", model="fake")
        self._facts = ModelFacts(dimension=dimension, max_model_len=max_model_len)
        self.latency_s = latency_s
        self.start_delay_s = start_delay_s
        self.nan_marker = nan_marker
        self.fail_with: Exception | None = None  # raised by embed() when set
        self.hang = False
        self._dead = asyncio.Event()
        self.started = False
        self.stopped = False
        # The latest calls' texts, bounded so that a soak does not grow memory.
        self.calls: deque[list[str]] = deque(maxlen=1000)
        self.call_count = 0
        self.completed = 0
        self.aborted = 0  # embed calls cancelled while in flight (client gone, timeout)
        self._control_file = control_file
        self._control_mtime: float | None = None
        self._stats_file = stats_file
        self._stats_task: asyncio.Task | None = None

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    @dead.setter
    def dead(self, value: bool) -> None:
        self._dead.set() if value else self._dead.clear()

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay_s)
        self.started = True
        if self._stats_file:
            self._stats_task = asyncio.create_task(self._write_stats_forever())

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    async def embed(
        self, texts: Sequence[str], *, max_total_tokens: int | None = None
    ) -> EmbeddingBatch:
        self._read_control()
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        counts = [fake_token_count(t) for t in texts]
        for i, n in enumerate(counts):
            if n > self._facts.max_model_len:
                raise InvalidInput(
                    f"input {i} has {n} tokens, but model '{self.spec.name}' accepts at most "
                    f"{self._facts.max_model_len} tokens per input",
                    index=i,
                )
        if max_total_tokens is not None and sum(counts) > max_total_tokens:
            raise InvalidInput(f"the inputs have {sum(counts)} tokens in all, but a request "
                               f"may have at most {max_total_tokens}")
        self.calls.append(list(texts))
        self.call_count += 1
        try:
            await self._work()
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        if self.fail_with is not None:
            raise self.fail_with
        vectors = np.stack([fake_vector(t, self._facts.dimension) for t in texts])
        if self.nan_marker:
            poisoned = [i for i, t in enumerate(texts) if self.nan_marker in t]
            vectors[poisoned] = np.nan
        self.completed += 1
        return EmbeddingBatch(vectors=vectors, token_counts=counts)

    async def _work(self) -> None:
        """Sleep `latency_s`, or forever when hung; end early with an error if the engine dies."""
        if self.dead:
            raise EngineUnavailable("the engine has stopped; the model cannot serve requests")
        latency = None if self.hang else self.latency_s
        if latency:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._dead.wait(), latency)
        while self.hang and not self.dead:  # a hung engine never answers, in flight or new
            await asyncio.sleep(0.05)
            self._read_control()
        if self.dead:
            raise EngineUnavailable("the engine has stopped; the model cannot serve requests")

    async def check_health(self) -> None:
        self._read_control()
        if not self.started or self.stopped:
            raise EngineUnavailable(f"model '{self.spec.name}' is not loaded")
        if self.dead:
            raise EngineUnavailable("the engine has stopped")
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.fail_with, (EngineUnavailable, EngineFailure)):
            raise EngineUnavailable(str(self.fail_with))

    async def shutdown(self) -> None:
        self.stopped = True
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._write_stats()

    # -- remote control (reliability battery) ------------------------------------------

    def _read_control(self) -> None:
        if not self._control_file:
            return
        try:
            mtime = os.stat(self._control_file).st_mtime_ns
            if mtime == self._control_mtime:
                return
            with open(self._control_file) as file:
                control = json.load(file)
        except (OSError, ValueError):
            return  # absent or half-written: keep the current behaviour
        self._control_mtime = mtime
        for key in _CONTROLLED:
            if key in control:
                value = control[key]
                if key == "fail":
                    self.fail_with = EngineFailure("injected engine failure") if value else None
                else:
                    setattr(self, key, value)

    async def _write_stats_forever(self) -> None:
        last = None
        while True:
            self._read_control()  # also notices "dead" with no traffic
            now = (self.call_count, self.completed, self.aborted)
            if now != last:
                self._write_stats()
                last = now
            await asyncio.sleep(0.1)

    def _write_stats(self) -> None:
        assert self._stats_file
        temporary = self._stats_file + ".tmp"
        with open(temporary, "w") as file:
            json.dump({"calls": self.call_count, "completed": self.completed,
                       "aborted": self.aborted}, file)
        os.replace(temporary, self._stats_file)


def fake_token_count(text: str) -> int:
    """Whitespace words plus the two special tokens a BERT tokenizer adds."""
    return len(text.split()) + 2


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """A unit float32 vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)
