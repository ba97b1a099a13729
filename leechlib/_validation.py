"""Input checks whose errors name the argument.

Every public function funnels its array arguments through these helpers, so a
bad input is a ``TypeError`` (wrong kind of object or dtype) or a ``ValueError``
(wrong shape, wrong values, NaN/inf, empty batch) that says which argument was
wrong and what was expected.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = [
    "as_binary",
    "as_real_points",
    "check_coords",
    "as_rng",
    "as_index",
]

COORDS = ("unit", "int")


def check_coords(coords) -> str:
    """Return ``coords`` if it is ``"unit"`` or ``"int"``; raise otherwise."""
    if not isinstance(coords, str):
        raise TypeError(f"coords must be 'unit' or 'int', got {type(coords).__name__}")
    if coords not in COORDS:
        raise ValueError(f"coords must be 'unit' or 'int', got {coords!r}")
    return coords


def _as_array(x, name):
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array")
    return arr


def as_binary(x, name: str, length: int, *, allow_empty: bool = False) -> np.ndarray:
    """Validate a binary array of shape ``(..., length)`` and return it as uint8.

    Accepts bool and integer dtypes (and floats holding exact 0/1 values).
    """
    arr = _as_array(x, name)
    if arr.ndim == 0 or arr.shape[-1] != length:
        raise ValueError(
            f"{name} must have shape (..., {length}), got shape {arr.shape}"
        )
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name} must be binary (values 0 or 1)")
        return arr.astype(np.uint8, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must be binary (values 0 or 1)")
        return arr.astype(np.uint8)
    raise TypeError(f"{name} must have a bool or integer dtype, got {arr.dtype}")


def as_real_points(
    x, name: str = "x", dim: int = 24, *, allow_empty: bool = False, check_finite: bool = True
) -> np.ndarray:
    """Validate real points of shape ``(..., dim)``.

    float32 and float64 are kept; other real dtypes (ints, bools, float16) are
    converted to float64.  Complex, object and string arrays are a ``TypeError``;
    NaN or inf values, a wrong last dimension or an empty batch a ``ValueError``.
    ``check_finite=False`` skips the NaN/inf scan for callers whose kernel checks
    every entry itself (and then raises the same error).
    """
    arr = _as_array(x, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if check_finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_rng(rng) -> np.random.Generator:
    """``rng`` as in scipy: None, an int seed, or a ``numpy.random.Generator``."""
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def as_index(n, name: str, low: int = 0, high: int | None = None) -> int:
    """Validate a Python integer argument in ``[low, high]``."""
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        v = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(n).__name__}") from None
    if v < low or (high is not None and v > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {rng}, got {v}")
    return v
