"""Compact vectors: float vectors made int8, uint8 or packed bits, one definition for every
dialect (Cohere's `embedding_types`, Voyage's `output_dtype`, Jina's `embedding_type`), the
Batch API and the bulk command.

From the float vector x (unit length, after any Matryoshka cut) of dimension d:
- `int8`: round(x * 127 / r) clipped to -128..127, with r = 8 / sqrt(d): the scale is the same
  for every vector (so dot products rank as the floats do) and covers eight standard
  deviations of a component of a random unit vector; rarer larger components clip.
- `uint8`: the int8 value + 128.
- `ubinary`: one bit per dimension, 1 where x > 0, packed eight to a byte with the first
  dimension in the highest bit (numpy.packbits, as sentence-transformers, Cohere and Voyage
  pack); ceil(d / 8) bytes, the last one padded with zero bits.
- `binary`: the ubinary bytes - 128, as signed int8 (offset binary).
"""

from __future__ import annotations

import numpy as np

# Every compact type; `float` is the vector itself (float32).
DTYPES = ("float", "int8", "uint8", "binary", "ubinary")
# The numpy type of each compact type's values: what its raw bytes (base64, .npy) hold.
NUMPY_TYPES = {
    "float": np.dtype("<f4"),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "binary": np.dtype(np.int8),
    "ubinary": np.dtype(np.uint8),
}


def quantize(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """`vectors` (one per row) as `dtype`: a float32 matrix, or an integer matrix of the
    module docstring's values (d columns, or ceil(d / 8) for the packed types)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if dtype == "float":
        return matrix
    if dtype in ("int8", "uint8"):
        scaled = int8(matrix)
        return scaled if dtype == "int8" else (scaled.astype(np.int16) + 128).astype(np.uint8)
    if dtype in ("binary", "ubinary"):
        packed = ubinary(matrix)
        return packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown dtype {dtype!r}; one of {list(DTYPES)}")


def int8(matrix: np.ndarray) -> np.ndarray:
    """round(x * 127 / r), r = 8 / sqrt(d), clipped to -128..127."""
    scale = 127 * np.sqrt(matrix.shape[1]) / 8
    quantized: np.ndarray = np.clip(np.rint(matrix * scale), -128, 127).astype(np.int8)
    return quantized


def ubinary(matrix: np.ndarray) -> np.ndarray:
    """1 bit per dimension (x > 0), eight to a byte, the first dimension in the highest bit."""
    packed: np.ndarray = np.packbits(matrix > 0, axis=1)
    return packed
