"""Vectors to wire form: Matryoshka truncation, float rows or little-endian float32 base64.

Works on whole numpy matrices. base64 needs one string per vector; when a row is a whole
number of 3-byte groups (any dimension divisible by 3: 384, 768, 1536, ...) the matrix is
encoded in one call and the text sliced, which is exactly the per-row encoding, about a third
cheaper.
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np

from gateway.errors import APIError, ErrorKind, invalid

# Explicit little-endian float32, the layout openai-python decodes with np.frombuffer("float32").
_LE_FLOAT32 = np.dtype("<f4")


def check_dimensions(
    dimensions: int | None, model_dimension: int, *, param: str = "dimensions"
) -> None:
    if dimensions is not None and dimensions > model_dimension:
        raise invalid(
            f"`{param}` must be between 1 and the model's dimension "
            f"{model_dimension}, got {dimensions}",
            param=param,
        )


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first `dimensions` components of each row and L2-renormalize (Matryoshka)."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    return unit_rows(vectors[:, :dimensions])


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1; a row of zeros stays zero rather than becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    scaled: np.ndarray = vectors / np.where(norms == 0, 1, norms)
    return scaled


def refuse_non_finite(vectors: np.ndarray) -> None:
    """A NaN or infinite vector is an engine fault: never answer it with 200."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise APIError(
            ErrorKind.ENGINE_FAILURE,
            f"the engine produced a non-finite vector for input {int(bad[0])}",
            param="input",
        )


def refuse_non_finite_scores(scores: np.ndarray) -> None:
    """A NaN or infinite relevance score is an engine fault, as a vector is."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise APIError(
            ErrorKind.ENGINE_FAILURE,
            f"the engine produced a non-finite score for document {int(bad[0])}",
            param="documents",
        )


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    """Rows ready for orjson: float32 rows (orjson writes numpy natively) or base64 strings."""
    refuse_non_finite(vectors)
    matrix = np.ascontiguousarray(vectors, dtype=_LE_FLOAT32)
    if encoding_format == "base64":
        return base64_rows(matrix)
    return list(matrix)


def base64_rows(matrix: np.ndarray) -> list[str]:
    """One base64 string per row of a C-contiguous little-endian float32 matrix."""
    row_bytes = matrix.shape[1] * matrix.itemsize
    if row_bytes % 3 == 0:
        text = binascii.b2a_base64(matrix.data, newline=False).decode("ascii")
        step = row_bytes // 3 * 4
        return [text[i : i + step] for i in range(0, len(text), step)]
    return [binascii.b2a_base64(row.data, newline=False).decode("ascii") for row in matrix]
