"""Parse cost of a 64-input `POST /v1/embeddings` body, per candidate way of declaring it.

    python -m bench.parse_cost [--runs 3000]

Prints the median time (microseconds) to turn the decoded JSON body (what `read_json`
returns) into a validated request, including the limit and NUL checks, for 64 texts of 12
words and for 64 token-id lists of 14 ids:
- `hand (7f21f39)`: the hand-written parser the gateway had before (its source is read from
  git history, so it is measured as it was), plus its `check_texts`;
- `pydantic`: the gateway's declarations (`gateway.schemas.parse`);
- `msgspec`: the same shape as a `msgspec.Struct`; msgspec allows one array type per union,
  so the input is `str | list[str | int | list[int]]` and one kind per request is checked
  in Python afterwards.
`orjson.loads` of the same body is shown for scale (every candidate runs after it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import orjson

from gateway.api.openai import EmbeddingsRequest
from gateway.api.wire import parse
from gateway.config import Settings

BEFORE = "7f21f39"  # the last commit with the hand-written parser
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "tired",
    "cats",
    "sleep",
    "near",
    "river",
    "banks",
]


def bodies() -> dict[str, dict]:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(64)]
    ids = [[rng.randrange(100_000) for _ in range(14)] for _ in range(64)]
    return {
        "64 texts": {"model": "m", "input": texts, "encoding_format": "float"},
        "64 token-id lists": {"model": "m", "input": ids},
    }


def hand_parser() -> Callable[[dict], Any]:
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:gateway/schemas.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("schemas_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE}:gateway/schemas.py", "exec"), module.__dict__)  # noqa: S102 - our own file at an older commit, to time the old parser

    def run(body: dict) -> Any:
        req = module.parse_embeddings_request(body)
        module.check_texts(req.inputs, max_items=2048)
        return req

    return run


_TEXT = Annotated[str, msgspec.Meta(pattern="^[^\x00]*$")]
_ID = Annotated[int, msgspec.Meta(ge=0)]


class _MsgspecRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: _TEXT | Annotated[list[_TEXT | _ID | list[_ID]], msgspec.Meta(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    input_type: str | None = None
    truncate: str | None = None
    truncate_prompt_tokens: int | None = None


def msgspec_parser(body: dict) -> Any:
    req = msgspec.convert(body, _MsgspecRequest)
    if isinstance(req.input, list):
        if len(req.input) > 2048:
            raise ValueError("too many inputs")
        kind = type(req.input[0])
        if any(type(item) is not kind for item in req.input):
            raise ValueError("one kind of input per request")
    return req


def median_us(run: Callable[[Any], Any], arg: Any, runs: int) -> float:
    for _ in range(min(runs, 300)):
        run(arg)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run(arg)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()
    settings = Settings()
    candidates: dict[str, Callable[[Any], Any]] = {
        f"hand ({BEFORE})": hand_parser(),
        "pydantic": lambda body: parse(EmbeddingsRequest, body, settings),
        "msgspec": msgspec_parser,
    }
    cases = bodies()
    print(f"median us per parse, {args.runs} runs")
    print("| candidate | " + " | ".join(cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for name, run in candidates.items():
        cells = [f"{median_us(run, body, args.runs):.1f}" for body in cases.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    raws = [orjson.dumps(body) for body in cases.values()]
    print(
        "| (orjson.loads, for scale) | "
        + " | ".join(f"{median_us(orjson.loads, raw, args.runs):.1f}" for raw in raws)
        + " |"
    )


if __name__ == "__main__":
    main()
