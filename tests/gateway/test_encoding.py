"""base64 rows: exact little-endian float32, whether encoded per row or in one call."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from gateway.encoding import encode_vectors


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
