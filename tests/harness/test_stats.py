"""The one percentile: nearest rank on q in [0, 100]."""

from __future__ import annotations

import math

import pytest

from harness.stats import percentile

# The two worked examples of the nearest-rank method in its usual references.
FIVE = [15, 20, 35, 40, 50]
TEN = [3, 6, 7, 8, 8, 10, 13, 15, 16, 20]


@pytest.mark.parametrize(
    "q, expected", [(0, 15), (5, 15), (20, 15), (30, 20), (40, 20), (50, 35), (100, 50)]
)
def test_five_values(q: float, expected: float) -> None:
    assert percentile(FIVE, q) == expected


@pytest.mark.parametrize("q, expected", [(25, 7), (50, 8), (75, 15), (90, 16), (100, 20)])
def test_ten_values(q: float, expected: float) -> None:
    assert percentile(TEN, q) == expected


def test_order_of_the_input_does_not_matter() -> None:
    assert percentile(list(reversed(TEN)), 75) == 15


def test_p99_of_a_hundred_values_is_the_99th() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0


def test_p99_of_a_thousand_values_leaves_ten_above() -> None:
    values = list(range(1, 1001))
    assert percentile(values, 99) == 990
    assert sum(v > percentile(values, 99) for v in values) == 10


def test_an_exact_rank_is_not_pushed_up_by_rounding() -> None:
    # 0.07 * 100 is 7.000000000000001 in binary floating point.
    assert percentile(range(1, 101), 7) == 7


def test_one_value_is_every_percentile() -> None:
    assert percentile([4.2], 0) == percentile([4.2], 99) == 4.2


def test_no_values_is_nan() -> None:
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("q", [-1, 100.5, 0.99 * 1000])
def test_q_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1, 2, 3], q)
