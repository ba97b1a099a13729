"""The shared input checks (leechlib._validation) and the TypeError/ValueError rule."""

import math

import numpy as np
import pytest

from leechlib import GolayCode, LeechLattice, ShellCodebook, find_isomorphism
from leechlib._jit import resolve_workers
from leechlib._validation import (
    SQRT8,
    as_binary,
    as_blocks,
    as_codes,
    as_real_values,
    check_choice,
    check_int,
    check_positive,
    check_range,
    subsample,
)
from leechlib.baselines import ScalarQuantizer
from leechlib.golay import mog_index, mog_position


def test_one_sqrt8():
    import leechlib.decode
    import leechlib.kernels
    import leechlib.lattice
    import leechlib.quantizers

    assert SQRT8 == math.sqrt(8.0)
    for mod in (leechlib.kernels, leechlib.lattice):
        assert mod.SQRT8 is SQRT8
    assert leechlib.decode._SQRT8 is SQRT8 and leechlib.quantizers._SQRT8 is SQRT8


@pytest.mark.parametrize("value, exc", [
    (3, None), (np.int64(3), None), (True, TypeError), (3.0, TypeError), ("3", TypeError),
    (None, TypeError), (-1, ValueError), (11, ValueError),
])
def test_check_int(value, exc):
    if exc is None:
        assert check_int(value, "n", 0, 10) == 3
    else:
        with pytest.raises(exc, match="n must be"):
            check_int(value, "n", 0, 10)


@pytest.mark.parametrize("value, exc", [
    (0.5, None), (2, None), (np.float32(0.5), None), (0.0, ValueError), (-1.0, ValueError),
    (math.inf, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError),
    (None, TypeError), (1j, TypeError),
])
def test_check_positive(value, exc):
    if exc is None:
        assert check_positive(value, "scale") == float(value)
    else:
        with pytest.raises(exc, match="scale must be a positive finite real number"):
            check_positive(value, "scale")
    assert check_positive(0.0, "atol", allow_zero=True) == 0.0


def test_check_choice():
    assert check_choice("a", "kind", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="kind must be 'a' or 'b', got 'c'"):
        check_choice("c", "kind", ("a", "b"))
    with pytest.raises(TypeError, match="kind must be 'a' or 'b', got int"):
        check_choice(1, "kind", ("a", "b"))


def test_as_blocks():
    y, shape = as_blocks(np.arange(48, dtype=np.int32).reshape(2, 1, 24))
    assert y.dtype == np.float64 and y.shape == (2, 24) and shape == (2, 1)
    assert y.flags.c_contiguous and y.flags.writeable
    src = np.zeros((3, 8))
    y, _ = as_blocks(src, "w", 8)
    y[0, 0] = 1.0
    assert src[0, 0] == 0.0  # a copy
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 24\).*np\.pad"):
        as_blocks(np.zeros(25))
    with pytest.raises(ValueError, match="empty batch"):
        as_blocks(np.zeros((0, 24)))
    with pytest.raises(ValueError, match="NaN or inf"):
        as_blocks(np.full(24, np.inf))
    with pytest.raises(TypeError, match="real numeric"):
        as_blocks(np.zeros(24, dtype=complex))
    with pytest.raises(TypeError, match="array-like"):
        as_blocks([[0.0] * 24, [0.0] * 23])


def test_as_codes_and_check_range():
    c = as_codes(np.array([[1, 2]], dtype=np.uint16), last=2)
    assert c.dtype == np.int64
    with pytest.raises(TypeError, match="codes must be an integer array"):
        as_codes(np.array([1.0]))
    with pytest.raises(ValueError, match=r"codes must have shape \(\.\.\., 2\)"):
        as_codes(np.array([1, 2, 3]), last=2)
    with pytest.raises(ValueError, match="empty batch"):
        as_codes(np.zeros(0, dtype=np.int64))
    assert as_codes(np.zeros(0, dtype=np.int64), allow_empty=True).shape == (0,)
    with pytest.raises(ValueError, match="out of range"):
        as_codes(np.array([2**63], dtype=np.uint64))
    check_range(np.array([0, 4]), 5, "codes")
    with pytest.raises(ValueError, match=r"codes out of range \[0, 5\): got -1"):
        check_range(np.array([0, -1, 7]), 5, "codes")


def test_subsample_and_values():
    y = np.arange(10)[:, None]
    assert subsample(y, 20) is y
    s = subsample(y, 4)
    assert s[:, 0].tolist() == [0, 3, 6, 9]
    assert as_real_values([1, 2]).dtype == np.float64
    with pytest.raises(ValueError, match="empty"):
        as_real_values([])


# the rule, at the public API: a wrong kind of object is a TypeError even where its
# value would be wrong too; a right kind with a bad value is a ValueError
@pytest.mark.parametrize("call, exc", [
    (lambda: mog_position(13.0), TypeError),
    (lambda: mog_position("13"), TypeError),
    (lambda: mog_position(24), ValueError),
    (lambda: mog_index(1.0, 2), TypeError),
    (lambda: mog_index(1, 4), ValueError),
    (lambda: find_isomorphism(GolayCode().G, GolayCode().G, method=1), TypeError),
    (lambda: ScalarQuantizer(2, kind=1), TypeError),
    (lambda: ScalarQuantizer(2, kind="magic"), ValueError),
    (lambda: resolve_workers(True), TypeError),
    (lambda: LeechLattice().contains(np.zeros(24), atol=-1.0), ValueError),
    (lambda: LeechLattice().contains(np.zeros(24), atol="0"), TypeError),
    (lambda: as_binary(np.array(["a"] * 23), "words", 24), TypeError),
    (lambda: GolayCode().is_automorphism(np.arange(23.0)), TypeError),
    (lambda: GolayCode().is_automorphism(np.arange(23)), ValueError),
    (lambda: ShellCodebook(4).point([[1, 2], [3]]), TypeError),
    (lambda: ShellCodebook(4).point(np.array([0.0])), TypeError),
    (lambda: ShellCodebook(4).point(np.array([-1])), ValueError),
])
def test_type_versus_value_errors(call, exc):
    with pytest.raises(exc):
        call()
