"""Input checks whose errors name the argument, and the coordinate conventions.

Every public function of leechlib funnels its arguments through these helpers, so
that a bad input gives an error that says which argument was wrong and what was
expected, never a crash deeper down or a silently wrong answer.

Which error (the one rule, everywhere in leechlib)
---------------------------------------------------
``TypeError``
    The argument is the wrong *kind* of object: not array-like (ragged lists), an
    array of the wrong dtype kind (object, string or complex where real numbers are
    expected; float where integers are expected), a float, a bool or a string
    where an integer is expected, a non-string where a name is expected.
``ValueError``
    The right kind of object with a bad *value*: a wrong shape or last dimension,
    an empty batch, NaN or inf, a number out of range, an index outside the
    codebook, a vector that is not a lattice point, an unknown name.

Checks test the kind first and the value after, so an argument that is wrong in
both ways is a ``TypeError``.  ``bool`` is not an integer here, although Python
says it is.

Coordinates: ``COORDS`` are the two names of :func:`check_coords`; a point in
``"unit"`` coordinates is the ``"int"`` point divided by :data:`SQRT8`, the one
constant for that in the package.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from ._constants import SQRT8  # noqa: F401  (re-exported: the package's one sqrt(8))

__all__ = [
    "SQRT8",
    "COORDS",
    "as_binary",
    "as_blocks",
    "as_codes",
    "as_real_points",
    "as_real_values",
    "as_rng",
    "check_choice",
    "check_coords",
    "check_int",
    "check_positive",
    "check_range",
    "subsample",
]

#: the coordinate conventions of the API (``coords=``)
COORDS = ("unit", "int")


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of the strings ``choices``; raise otherwise."""
    expected = " or ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_coords(coords) -> str:
    """Return ``coords`` if it is ``"unit"`` or ``"int"``; raise otherwise."""
    return check_choice(coords, "coords", COORDS)


def check_int(n, name: str, low: int | None = 0, high: int | None = None) -> int:
    """Validate an integer argument (Python or numpy int, not bool) in ``[low, high]``.

    The one integer check of the project (torch_ext takes it through
    :mod:`leechlib.kernels`).  ``None`` leaves a side open.  ``TypeError`` for a
    non-integer (bools included), ``ValueError`` naming the argument and its range
    otherwise.

    Examples
    --------
    >>> from leechlib._validation import check_int
    >>> check_int(3, "n", 1)
    3
    >>> check_int(9, "bits", 1, 8)
    Traceback (most recent call last):
    ...
    ValueError: bits must be in [1, 8], got 9
    >>> check_int(-1, "seed")
    Traceback (most recent call last):
    ...
    ValueError: seed must be >= 0, got -1
    """
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        v = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(n).__name__}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        if low is not None and high is not None:
            rng = f"in [{low}, {high}]"
        else:
            rng = f">= {low}" if high is None else f"<= {high}"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """Validate a positive (or, with ``allow_zero``, non-negative) finite real number."""
    what = "non-negative" if allow_zero else "positive"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {what} finite real number, got "
                        f"{type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and (v >= 0.0 if allow_zero else v > 0.0)):
        raise ValueError(f"{name} must be a {what} finite real number, got {value!r}")
    return v


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
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must have a bool or integer dtype, got {arr.dtype}")
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
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be binary (values 0 or 1)")
    return arr.astype(np.uint8)


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


def as_blocks(x, name: str = "x", dim: int = 24):
    """Validated blocks of a quantizer: a float64 ``(n, dim)`` C-contiguous copy of
    ``x`` (shape ``(..., dim)``, finite, not empty) and the batch shape ``x.shape[:-1]``.

    The shape error says how to cut a longer vector into blocks.
    """
    arr = _as_array(x, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}), got shape {arr.shape}: split longer "
            f"vectors into blocks of {dim} numbers, padding to a multiple of {dim} first, "
            f"e.g. np.pad(w, (0, -len(w) % {dim})).reshape(-1, {dim})"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
    y = np.array(arr, dtype=np.float64, order="C", copy=True).reshape(-1, dim)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or inf")
    return y, arr.shape[:-1]


def as_real_values(x, name: str = "x") -> np.ndarray:
    """Validated real values of any shape (not empty, finite), as a float64 array."""
    arr = _as_array(x, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or inf")
    return out


def as_codes(codes, name: str = "codes", last: int | None = None, *,
             allow_empty: bool = False) -> np.ndarray:
    """Validated integer codes as an int64 array (same shape).

    Integer dtypes only (a float array is a ``TypeError``, even with whole values);
    ``last``, if given, is the required last dimension.  Values above the int64
    range (uint64) are a ``ValueError``; the range of a codebook is checked by
    :func:`check_range`.
    """
    arr = _as_array(codes, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if last is not None and (arr.ndim == 0 or arr.shape[-1] != last):
        raise ValueError(f"{name} must have shape (..., {last}), got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds values out of range")
    return arr.astype(np.int64)


def check_range(arr: np.ndarray, size: int, name: str) -> None:
    """Raise ``ValueError`` unless every entry of the integer array is in ``[0, size)``."""
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        bad = int(arr[(arr < 0) | (arr >= size)].ravel()[0])
        raise ValueError(f"{name} out of range [0, {size}): got {bad}")


def subsample(y: np.ndarray, max_points: int) -> np.ndarray:
    """At most ``max_points`` rows of ``y``, evenly spaced, first and last included
    (deterministic); ``y`` itself when it is short enough."""
    if len(y) <= max_points:
        return y
    idx = np.linspace(0, len(y) - 1, max_points).round().astype(np.int64)
    return y[idx]


def as_rng(rng) -> np.random.Generator:
    """``rng`` as in scipy: None, an int seed, or a ``numpy.random.Generator``."""
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )
