"""Served models: name and alias lookup, engine start-up state, readiness."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Sequence

from adapters.base import Engine, EngineError
from gateway.config import InputPolicy
from gateway.errors import APIError, ErrorKind

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
    state: EngineState = EngineState.LOADING
    failure: str | None = None

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
    _by_name: dict[str, ServedModel] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {name: m for m in self.models for name in m.all_names}

    def resolve(self, name: str) -> ServedModel:
        """The model for a request, or 404 `model_not_found` / 503 while it cannot serve."""
        model = self._by_name.get(name)
        if model is None:
            raise APIError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model '{name}' does not exist. Served models: {sorted(self._by_name)}",
                param="model",
            )
        if model.state is EngineState.LOADING:
            raise APIError(ErrorKind.UNAVAILABLE, f"model '{model.name}' is still loading",
                           headers={"Retry-After": "5"})
        if model.state is not EngineState.READY:
            raise APIError(ErrorKind.UNAVAILABLE, f"model '{model.name}' is not available "
                           f"({model.state.value})", headers={"Retry-After": "5"})
        return model

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
            await model.engine.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any load failure: record it, log the traceback, stay up
            model.state, model.failure = EngineState.FAILED, f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", model.name)
            return False
        model.state = EngineState.READY
        return True

    async def readiness(self) -> dict[str, str]:
        """Each model's state, asking ready engines whether they still can serve."""
        states = {}
        for model in self.models:
            if model.state is EngineState.READY:
                try:
                    await model.engine.check_health()
                except EngineError as exc:
                    model.state, model.failure = EngineState.FAILED, exc.message
            states[model.name] = model.state.value
        return states

    async def shutdown_all(self) -> None:
        for model in self.models:
            model.state = EngineState.STOPPED
        await asyncio.gather(*(m.engine.shutdown() for m in self.models), return_exceptions=True)
