"""Served models: name and alias lookup, engine state, readiness, the watchdog that probes
every engine, and the restarts that bring a dead or hung engine back.

A model's life: `loading` -> `ready`; when its engine dies (vLLM's EngineDeadError) or its
probe gets no answer within the deadline (hung: a stopped or stuck engine core), it is taken
out of service at once (`restarting`: waiting requests fail with 503, new ones get 503 with
Retry-After, other models keep serving), its engine is shut down (vLLM kills the engine-core
processes, SIGKILL after a grace) and started again after a backoff. After
`RestartPolicy.attempts` starts that did not hold, the model is `down`: the registry gave up,
and /health says 503 so that the orchestrator replaces the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from adapters.base import Engine, EngineError
from gateway.config import InputPolicy
from gateway.errors import APIError, ErrorKind, brief

log = logging.getLogger("gateway.registry")  # the name log filters match on

# /ready reports a model `unresponsive` while the watchdog's probe has waited this long.
_UNRESPONSIVE_AFTER_S = 1.0


def _scores_pairs(model: ServedModel) -> bool:
    """Whether a model scores pairs: as loaded, or before that as configured."""
    if model.state is not EngineState.READY:
        return model.engine.spec.rerank_kind in ("cross_encoder", "llm")
    try:
        return model.engine.facts.scores_pairs
    except EngineError:
        return False


class EngineState(Enum):
    """A model's state, as /ready shows it (and the metrics export it)."""

    LOADING = "loading"  # first start, not serving yet
    READY = "ready"
    RESTARTING = "restarting"  # died or hung; being restarted, requests get 503
    DOWN = "down"  # could not be (re)started: the registry gave up, /health says 503
    STOPPED = "stopped"  # the server is shutting down


@dataclass(frozen=True)
class RestartPolicy:
    """How dead engines are restarted: `attempts` starts in a row, the first after
    `backoff_s`, each next wait doubled up to `max_backoff_s`. A start counts as held, and the
    count starts over, once the engine has served for `stable_s`."""

    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    stable_s: float = 60.0
    # The old engine's shutdown (vLLM: SIGTERM, then SIGKILL after 5 s) may take this long.
    stop_timeout_s: float = 30.0


@dataclass
class ServedModel:
    """One engine, the names clients reach it by, and how its inputs become prompts."""

    name: str
    aliases: tuple[str, ...]
    engine: Engine
    policy: InputPolicy = field(default_factory=InputPolicy)
    state: EngineState = EngineState.LOADING
    # Why the engine last went out of service (for logs and operators, never for clients:
    # it may name server paths).
    failure: str | None = None
    # Times the engine was brought back after dying or hanging.
    restarts: int = 0
    # Set when the engine dies or hangs after loading: wakes the requests waiting on it.
    down: asyncio.Event = field(default_factory=asyncio.Event)
    # Starts since the engine last served for RestartPolicy.stable_s.
    tries: int = 0
    ready_since: float | None = None
    # When the watchdog's probe now in flight was sent (None: no probe waiting).
    probe_since: float | None = None
    # The model requests without a `model` field get (YAML `default: true`).
    default: bool = False
    # While the engine starts: the step it reported (adapters.base.START_STEPS) and when the
    # start began (time.monotonic()); both None otherwise.
    step: str | None = None
    start_began: float | None = None

    def progress(self) -> dict[str, Any] | None:
        """The current start step and seconds since the start began, while starting."""
        if self.step is None or self.start_began is None:
            return None
        return {"step": self.step, "elapsed_s": round(time.monotonic() - self.start_began, 1)}

    @property
    def all_names(self) -> tuple[str, ...]:
        """Name, aliases, and the virtual names that apply a prompt template."""
        return (self.name, *self.aliases, *self.policy.prompt_aliases)

    def prompt_of(self, name: str) -> str | None:
        """The prompt a virtual model name applies (None for the plain names)."""
        return self.policy.prompt_aliases.get(name)


@dataclass
class ModelRegistry:
    """Routes a request's `model` to its engine and knows whether every engine can serve."""

    models: Sequence[ServedModel]
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    # Called when a model goes `down` after loading (a worker process exits then, so that its
    # supervisor starts a fresh one).
    on_give_up: Callable[[], None] | None = None
    # While an engine starts, a "still <step>" log line this often.
    progress_log_interval_s: float = 10.0
    _by_name: dict[str, ServedModel] = field(init=False, repr=False)
    _restarts: dict[str, asyncio.Task[None]] = field(init=False, repr=False, default_factory=dict)

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
            raise APIError(
                ErrorKind.UNAVAILABLE,
                f"model '{model.name}' is still loading",
                headers={"Retry-After": "5"},
            )
        if model.state is EngineState.RESTARTING:
            raise APIError(
                ErrorKind.UNAVAILABLE,
                f"model '{model.name}' is restarting after an engine fault; retry shortly",
                headers={"Retry-After": "10"},
            )
        if model.state is not EngineState.READY:
            raise APIError(
                ErrorKind.UNAVAILABLE,
                f"model '{model.name}' is not available ({model.state.value})",
                headers={"Retry-After": "30"},
            )
        return model

    def default_model(self, *, scoring: bool = False) -> ServedModel:
        """The model of a request that names none (the texts API's and TEI's routes, vLLM's
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
                param="model",
            )
        return self.resolve((candidates or list(self.models))[0].name)

    def progress(self) -> dict[str, dict[str, Any]]:
        """Step and elapsed seconds of every model whose engine is starting."""
        return {m.name: p for m in self.models if (p := m.progress()) is not None}

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
        try:
            await self._start_engine(model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any load failure: record it, log, stay up
            model.state, model.failure = EngineState.DOWN, f"{type(exc).__name__}: {exc}"
            # A missing model needs no traceback: the message names the path.
            log.error(
                "model %s failed to load while %s: %s",
                model.name,
                model.step,
                model.failure,
                exc_info=not isinstance(exc, FileNotFoundError),
            )
            model.step = None
            return False
        model.state, model.ready_since = EngineState.READY, time.monotonic()
        return True

    async def _start_engine(self, model: ServedModel) -> None:
        """`engine.start()`, with its steps in `model.step` (for /ready) and in the log, and a
        "still <step>" line every `progress_log_interval_s` while it lasts."""
        began = model.start_began = time.monotonic()

        def report(step: str) -> None:
            model.step = step
            log.info(
                "model %s: %s (%.1f s since start)", model.name, step, time.monotonic() - began
            )

        starting = asyncio.ensure_future(model.engine.start(report))
        try:
            while not (await asyncio.wait({starting}, timeout=self.progress_log_interval_s))[0]:
                log.info(
                    "model %s: still %s (%.0f s since start)",
                    model.name,
                    model.step,
                    time.monotonic() - began,
                )
            starting.result()
        except BaseException:
            starting.cancel()
            raise  # `model.step` still says where it failed, for the caller's log
        finally:
            model.start_began = None
        model.step = None
        log.info("model %s: ready in %.1f s", model.name, time.monotonic() - began)

    def mark_down(self, model: ServedModel, reason: str) -> None:
        """Take a loaded model out of service (new requests get 503, waiting ones fail now)
        and restart its engine in the background."""
        if model.state is not EngineState.READY:
            return
        model.state, model.failure = EngineState.RESTARTING, reason
        model.down.set()
        if (
            model.ready_since is not None
            and time.monotonic() - model.ready_since >= self.restart.stable_s
        ):
            model.tries = 0  # it had served a while: a new fault, not the last start failing
        log.error("model %s is out of service: %s; restarting its engine", model.name, reason)
        self._restarts[model.name] = asyncio.get_running_loop().create_task(
            self._restart(model), name=f"restart-{model.name}"
        )

    async def _restart(self, model: ServedModel) -> None:
        while True:
            await self._stop_engine(model)
            if model.tries >= self.restart.attempts:
                self._give_up(model)
                return
            delay = min(self.restart.backoff_s * 2**model.tries, self.restart.max_backoff_s)
            model.tries += 1
            log.info(
                "model %s: restart %d of %d in %g s",
                model.name,
                model.tries,
                self.restart.attempts,
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await self._start_engine(model)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed start: the next try, or give up
                model.failure = f"restart failed: {type(exc).__name__}: {exc}"
                model.step = None
                log.exception("model %s: restart %d failed", model.name, model.tries)
                continue
            model.restarts += 1
            model.state, model.failure = EngineState.READY, None
            model.ready_since, model.probe_since = time.monotonic(), None
            model.down.clear()
            log.warning("model %s is back in service (restart %d)", model.name, model.restarts)
            return

    async def _stop_engine(self, model: ServedModel) -> None:
        try:
            await asyncio.wait_for(model.engine.shutdown(), self.restart.stop_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken engine may fail to stop cleanly; a start still follows
            log.exception("model %s: stopping the failed engine", model.name)

    def _give_up(self, model: ServedModel) -> None:
        model.state = EngineState.DOWN
        log.critical(
            "model %s is down: %d restarts in a row did not hold (%s); /health now answers 503",
            model.name,
            self.restart.attempts,
            model.failure,
        )
        if self.on_give_up is not None:
            self.on_give_up()

    def given_up(self) -> list[str]:
        """The models that are down for good (failed to load, or restarts exhausted)."""
        return [m.name for m in self.models if m.state is EngineState.DOWN]

    async def probe(self, model: ServedModel, timeout_s: float) -> bool | None:
        """Probe a ready engine (a real request through it, see `Engine.check_health`): True,
        False (it reported itself dead: now marked down), or None when it did not answer
        within `timeout_s`."""
        if model.state is not EngineState.READY:
            return False
        model.probe_since = time.monotonic()
        try:
            await asyncio.wait_for(model.engine.check_health(), timeout_s)
        except TimeoutError:
            return None
        except EngineError as exc:
            self.mark_down(model, exc.message)
            return False
        finally:
            model.probe_since = None
        return True

    async def readiness(self) -> dict[str, str]:
        """Each model's state, as the watchdog last found it; `unresponsive` while its probe
        has gone unanswered for a second. Never waits on an engine."""
        now = time.monotonic()
        return {
            m.name: "unresponsive"
            if m.state is EngineState.READY
            and m.probe_since is not None
            and now - m.probe_since > _UNRESPONSIVE_AFTER_S
            else m.state.value
            for m in self.models
        }

    async def watch(self, interval_s: float, timeout_s: float) -> None:
        """Forever: probe every ready engine; one that dies, or does not answer its probe
        within `timeout_s` (hung), is taken out of service and restarted."""

        async def one(model: ServedModel) -> None:  # one loop per model: a hung one waits alone
            while True:
                if await self.probe(model, timeout_s) is None:
                    self.mark_down(
                        model, f"the engine did not answer a probe within {timeout_s:g} s (hung)"
                    )
                await asyncio.sleep(interval_s)

        await asyncio.gather(*(one(m) for m in self.models))

    async def shutdown_all(self) -> None:
        for task in self._restarts.values():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for model in self.models:
            model.state = EngineState.STOPPED
        await asyncio.gather(*(m.engine.shutdown() for m in self.models), return_exceptions=True)
