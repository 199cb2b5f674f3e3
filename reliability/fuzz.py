"""Schema fuzzing: schemathesis generates requests (valid and invalid) for every operation
of the served /openapi.json; any 5xx answer is a failure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable


@dataclass
class FuzzResult:
    operations: int = 0
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)


def fuzz(base_url: str, key: str | None, max_examples: int = 50) -> FuzzResult:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=headers)
    result = FuzzResult()
    for loaded in schema.get_all_operations():
        operation = loaded.ok()
        result.operations += 1
        for mode in ("positive", "negative"):
            strategy = operation.as_strategy(generation_mode=_mode(mode))

            @given(case=strategy)
            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                response = case.call(headers=headers, timeout=30)
                result.cases += 1
                result.statuses[response.status_code] += 1
                if response.status_code >= 500 and not _documented(case, response):
                    result.server_errors.append(
                        f"{case.method} {case.path} -> {response.status_code}: "
                        f"{response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:
                pass  # no invalid request exists for an operation without inputs
    return result


def _mode(name: str):
    from schemathesis.generation import GenerationMode

    return GenerationMode.POSITIVE if name == "positive" else GenerationMode.NEGATIVE


def _documented(case, response) -> bool:
    # /ready answers 503 by design whenever an engine cannot serve; nothing else may 5xx.
    return case.path == "/ready" and response.status_code == 503
