"""Served models: name and alias lookup, engine state, readiness, and the watchdog that takes
a dead or hung engine out of service (its requests fail fast; other models keep serving)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Sequence

from adapters.base import Engine, EngineError
from gateway.config import InputPolicy
from gateway.errors import APIError, ErrorKind, brief

log = logging.getLogger(__name__)


class EngineState(Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class ServedModel:
    """One engine, the names clients reach it by, and how its inputs become prompts."""

    name: str
    aliases: tuple[str, ...]
    engine: Engine
    policy: InputPolicy = field(default_factory=InputPolicy)
    # The model requests without a `model` field get (YAML `default: true`).
    default: bool = False
    state: EngineState = EngineState.LOADING
    failure: str | None = None
    # Set when the engine dies or hangs after loading: wakes the requests waiting on it.
    down: asyncio.Event = field(default_factory=asyncio.Event)
    # While the engine starts: the step it reported (adapters.base.START_STEPS) and when the
    # start began (time.monotonic()); both None otherwise.
    step: str | None = None
    start_began: float | None = None

    def progress(self) -> dict | None:
        """The current start step and seconds since the start began, while starting."""
        if self.step is None or self.start_began is None:
            return None
        return {"step": self.step,
                "elapsed_s": round(time.monotonic() - self.start_began, 1)}

    @property
    def all_names(self) -> tuple[str, ...]:
        """Name, aliases, and the virtual names that apply a prompt template."""
        return (self.name, *self.aliases, *self.policy.prompt_aliases)

    def prompt_of(self, name: str) -> str | None:
        """The prompt a virtual model name applies (None for the plain names)."""
        return self.policy.prompt_aliases.get(name)


def _scores_pairs(model: ServedModel) -> bool:
    """Whether a model scores pairs: as loaded, or before that as configured."""
    if model.state is not EngineState.READY:
        return model.engine.spec.rerank_kind in ("cross_encoder", "llm")
    try:
        return model.engine.facts.scores_pairs
    except EngineError:
        return False


@dataclass
class ModelRegistry:
    """Routes a request's `model` to its engine and knows whether every engine can serve."""

    models: Sequence[ServedModel]
    # While an engine starts, a "still <step>" log line this often.
    progress_log_interval_s: float = 10.0
    _by_name: dict[str, ServedModel] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {name: m for m in self.models for name in m.all_names}

    def resolve(self, name: str) -> ServedModel:
        """The model for a request, or 404 `model_not_found` / 503 while it cannot serve."""
        model = self._by_name.get(name)
        if model is None:
            raise APIError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model {brief(name)} does not exist. Served models: {sorted(self._by_name)}",
                param="model",
            )
        if model.state is EngineState.LOADING:
            raise APIError(ErrorKind.UNAVAILABLE, f"model '{model.name}' is still loading",
                           headers={"Retry-After": "5"})
        if model.state is not EngineState.READY:
            raise APIError(ErrorKind.UNAVAILABLE, f"model '{model.name}' is not available "
                           f"({model.state.value})", headers={"Retry-After": "5"})
        return model

    def default_model(self, *, scoring: bool = False) -> ServedModel:
        """The model of a request that names none (the seed's and TEI's routes, vLLM's
        optional `model`): the one marked `default`, else the only embedding model (for
        `scoring`: the only pair model, else the embedding default); a 400 listing the
        candidates when there are several. Then resolved as `resolve` does."""
        marked = [m for m in self.models if m.default]
        if marked:
            return self.resolve(marked[0].name)
        pairs = [m for m in self.models if _scores_pairs(m)]
        embedding = [m for m in self.models if not _scores_pairs(m)]
        candidates = pairs if scoring and pairs else embedding
        if len(candidates) > 1:
            kind = "pair-scoring" if candidates is pairs else "embedding"
            raise APIError(
                ErrorKind.INVALID_REQUEST,
                f"`model` is required: this server has several {kind} models "
                f"{[m.name for m in candidates]} and none is marked `default: true`",
                param="model")
        return self.resolve((candidates or list(self.models))[0].name)

    def names(self) -> Iterable[tuple[str, str]]:
        """(name clients use, model it serves) for every name and alias."""
        for model in self.models:
            for name in model.all_names:
                yield name, model.name

    async def start_all(self) -> bool:
        """Start every engine concurrently; True when all of them loaded."""
        results = await asyncio.gather(*(self._start(m) for m in self.models))
        return all(results)

    async def _start(self, model: ServedModel) -> bool:
        model.start_began = time.monotonic()

        def report(step: str) -> None:
            model.step = step
            log.info("model %s: %s (%.1f s since start)", model.name, step,
                     time.monotonic() - model.start_began)

        starting: asyncio.Future | None = None
        try:
            starting = asyncio.ensure_future(model.engine.start(report))
            while not (await asyncio.wait({starting}, timeout=self.progress_log_interval_s))[0]:
                log.info("model %s: still %s (%.0f s since start)", model.name, model.step,
                         time.monotonic() - model.start_began)
            starting.result()
        except asyncio.CancelledError:
            if starting is not None:
                starting.cancel()
            raise
        except Exception as exc:  # any load failure: record it, log the traceback, stay up
            model.state, model.failure = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            # A missing model needs no traceback: the message names the path.
            log.error("model %s failed to load while %s: %s", model.name, model.step,
                      model.failure, exc_info=not isinstance(exc, FileNotFoundError))
            return False
        finally:
            elapsed, model.step, model.start_began = (
                time.monotonic() - model.start_began, None, None)
        model.state = EngineState.READY
        log.info("model %s: ready in %.1f s", model.name, elapsed)
        return True

    def progress(self) -> dict[str, dict]:
        """Step and elapsed seconds of every model whose engine is starting."""
        return {m.name: p for m in self.models if (p := m.progress()) is not None}

    def mark_down(self, model: ServedModel, reason: str) -> None:
        """Take a loaded model out of service: new requests get 503, waiting ones fail now."""
        if model.state is not EngineState.READY:
            return
        model.state, model.failure = EngineState.FAILED, reason
        model.down.set()
        log.error("model %s is out of service: %s", model.name, reason)

    async def check(self, model: ServedModel, timeout_s: float) -> bool | None:
        """Ask a ready engine whether it can serve: True, False (now marked down), or None
        when it did not answer within `timeout_s`."""
        if model.state is not EngineState.READY:
            return False
        try:
            await asyncio.wait_for(model.engine.check_health(), timeout_s)
        except asyncio.TimeoutError:
            return None
        except EngineError as exc:
            self.mark_down(model, exc.message)
            return False
        return True

    async def readiness(self, timeout_s: float = 1.0) -> dict[str, str]:
        """Each model's state, asking ready engines (briefly) whether they still can serve."""
        answers = await asyncio.gather(*(self.check(m, timeout_s) for m in self.models))
        return {m.name: "unresponsive" if answer is None else m.state.value
                for m, answer in zip(self.models, answers)}

    async def watch(self, interval_s: float, timeout_s: float) -> None:
        """Forever: check every loaded engine; one that dies, or does not answer its health
        check within `timeout_s` (hung), is taken out of service."""
        async def one(model: ServedModel) -> None:  # one loop per model: a hung one waits alone
            while True:
                if await self.check(model, timeout_s) is None:
                    self.mark_down(model, f"the engine did not answer a health check within "
                                          f"{timeout_s:g} s (hung)")
                await asyncio.sleep(interval_s)

        await asyncio.gather(*(one(m) for m in self.models))

    async def shutdown_all(self) -> None:
        for model in self.models:
            model.state = EngineState.STOPPED
        await asyncio.gather(*(m.engine.shutdown() for m in self.models), return_exceptions=True)
