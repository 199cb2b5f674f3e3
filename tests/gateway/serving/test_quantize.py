"""Compact vectors: the int8 scale, uint8 as int8 + 128, the bit order and padding of the
packed types, and the numpy types their raw bytes have."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.serving.quantize import DTYPES, NUMPY_TYPES, quantize

# d = 16: r = 8 / sqrt(16) = 2, so x maps to round(x * 127 / 2) = round(x * 63.5).
SIXTEEN = np.array([[0.5, -0.25, 0.1, -0.1, 1.0, 3.0, -3.0, 0.0] + [0.01] * 8], dtype=np.float32)


def test_int8_is_round_x_times_127_over_r_clipped() -> None:
    int8 = quantize(SIXTEEN, "int8")
    assert int8.dtype == np.int8
    assert int8[0, :8].tolist() == [32, -16, 6, -6, 64, 127, -128, 0]
    assert int8[0, 8:].tolist() == [1] * 8  # 0.635


def test_uint8_is_int8_plus_128() -> None:
    uint8 = quantize(SIXTEEN, "uint8")
    assert uint8.dtype == np.uint8
    assert uint8[0, :8].tolist() == [160, 112, 134, 122, 192, 255, 0, 128]
    np.testing.assert_array_equal(
        uint8.astype(np.int16), quantize(SIXTEEN, "int8").astype(np.int16) + 128
    )


def test_the_int8_scale_follows_the_dimension() -> None:
    # d = 64: r = 1, x maps to round(x * 127).
    vector = np.zeros((1, 64), dtype=np.float32)
    vector[0, :3] = [0.5, -0.5, 1.5]
    assert quantize(vector, "int8")[0, :3].tolist() == [64, -64, 127]


def test_ubinary_packs_the_first_dimension_into_the_highest_bit() -> None:
    # 12 dimensions: two bytes, the last four bits of the second byte zero.
    signs = [1, -1, -1, -1, -1, -1, -1, 1, 1, -1, 1, -1]
    vector = np.array([signs], dtype=np.float32) * 0.3
    ubinary = quantize(vector, "ubinary")
    assert ubinary.dtype == np.uint8
    assert ubinary.tolist() == [[0b1000_0001, 0b1010_0000]]


def test_binary_is_ubinary_minus_128_as_signed() -> None:
    vector = np.array([[1, -1, -1, -1, -1, -1, -1, 1, 1, -1, 1, -1]], dtype=np.float32)
    binary = quantize(vector, "binary")
    assert binary.dtype == np.int8
    assert binary.tolist() == [[129 - 128, 160 - 128]]
    assert quantize(-np.ones((1, 8), dtype=np.float32), "binary").tolist() == [[-128]]
    assert quantize(np.ones((1, 8), dtype=np.float32), "binary").tolist() == [[127]]


def test_zero_is_a_zero_bit() -> None:
    assert quantize(np.zeros((1, 8), dtype=np.float32), "ubinary").tolist() == [[0]]


@pytest.mark.parametrize(
    ("dimension", "columns"), [(1, 1), (7, 1), (8, 1), (9, 2), (12, 2), (16, 2), (384, 48)]
)
def test_packed_types_have_ceil_d_over_8_columns(dimension: int, columns: int) -> None:
    vectors = np.random.default_rng(0).standard_normal((3, dimension)).astype(np.float32)
    for dtype in ("binary", "ubinary"):
        assert quantize(vectors, dtype).shape == (3, columns)
    for dtype in ("float", "int8", "uint8"):
        assert quantize(vectors, dtype).shape == (3, dimension)


def test_every_type_has_its_numpy_type() -> None:
    vectors = np.random.default_rng(1).standard_normal((2, 10))
    for dtype in DTYPES:
        assert quantize(vectors, dtype).dtype == NUMPY_TYPES[dtype]


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="float16"):
        quantize(SIXTEEN, "float16")
