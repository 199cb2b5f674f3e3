"""Vectors to wire form: truncation, float rows, base64 (per row or in one call), NaN refusal."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from gateway.errors import APIError
from gateway.serving.encoding import encode_vectors, truncate_dimensions


def test_base64_round_trips_float32() -> None:
    vectors = np.array([[0.5, -1.25, 3.0]], dtype=np.float32)
    (encoded,) = encode_vectors(vectors, "base64")
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == [0.5, -1.25, 3.0]


def test_float_rows_are_float32_arrays() -> None:
    rows = encode_vectors(np.ones((2, 3), dtype=np.float64), "float")
    assert [row.dtype for row in rows] == [np.dtype("<f4")] * 2


def test_truncation_renormalizes_and_keeps_zero_rows_finite() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = truncate_dimensions(vectors, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_no_truncation_returns_input() -> None:
    vectors = np.ones((1, 3), dtype=np.float32)
    assert truncate_dimensions(vectors, None) is vectors
    assert truncate_dimensions(vectors, 3) is vectors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused(bad: float) -> None:
    vectors = np.zeros((3, 2), dtype=np.float32)
    vectors[2, 1] = bad
    with pytest.raises(APIError) as info:
        encode_vectors(vectors, "float")
    assert info.value.status == 500
    assert "input 2" in info.value.message


@pytest.mark.parametrize("dimension", [384, 1024, 1, 3, 7])
def test_base64_rows_decode_to_the_exact_vectors(dimension: int) -> None:
    vectors = np.random.default_rng(dimension).standard_normal((5, dimension)).astype(np.float32)
    rows = encode_vectors(vectors, "base64")
    assert rows == [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
    decoded = np.stack([np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows])
    np.testing.assert_array_equal(decoded, vectors)


def test_base64_of_a_truncated_non_contiguous_view() -> None:
    vectors = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    view = vectors[:, :96]  # what `dimensions` hands over before renormalising
    rows = encode_vectors(view, "base64")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(rows[3]), dtype="<f4"), view[3])
