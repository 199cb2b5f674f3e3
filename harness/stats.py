"""The one percentile every latency figure of the benchmark and the battery is computed with."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile: for `q` in [0, 100] and `n` values, the value of rank
    `ceil(q / 100 * n)` in ascending order (rank 1 when that is 0), so the answer is always
    one of the values and `q` of them are at or below it. NaN when there are no values.

    For [15, 20, 35, 40, 50]: p0 and p20 are 15, p30 and p40 are 20, p50 is 35, p100 is 50.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # round() first: q / 100 * n in binary floating point can land a hair above an integer.
    rank = math.ceil(round(q / 100 * len(ordered), 9))
    return ordered[max(rank, 1) - 1]
