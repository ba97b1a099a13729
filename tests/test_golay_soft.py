"""Soft-decision maximum-likelihood decoding of the Golay code against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import GolayCode
from leechlib._kernels.reference import golay_soft_ref
from leechlib.golay import golay_decode_soft as _golay_decode_soft

CODE = GolayCode()
WORDS = CODE.codewords()


def score(c, r):
    return ((1.0 - 2.0 * c.astype(np.float64)) * r).sum(axis=-1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sigma", [0.01, 1.0, 1e6])
def test_soft_matches_bruteforce(dtype, sigma):
    rng = np.random.default_rng(int(sigma * 10) % 97)
    r = (sigma * rng.standard_normal((3000, 24))).astype(dtype)
    c = CODE.decode_soft(r)
    assert c.dtype == np.uint8 and c.shape == r.shape
    assert CODE.contains(c).all()
    r64 = r.astype(np.float64)
    rc, rs, gap = golay_soft_ref(r64)
    s = score(c, r64)
    np.testing.assert_allclose(s, rs, rtol=1e-12, atol=1e-12 * sigma)
    clear = gap > 1e-9 * np.abs(r64).sum(axis=1)
    np.testing.assert_array_equal(c[clear], rc[clear])


def test_soft_ties_integer_reliabilities():
    rng = np.random.default_rng(1)
    r = rng.integers(-1, 2, size=(3000, 24)).astype(np.float64)
    c = CODE.decode_soft(r)
    assert CODE.contains(c).all()
    _, rs, _ = golay_soft_ref(r)
    np.testing.assert_array_equal(score(c, r), rs)  # exact: integer sums
    again = CODE.decode_soft(r, workers=-1)
    np.testing.assert_array_equal(again, c)  # deterministic tie-breaking


def test_soft_near_codewords_and_all_zero():
    rng = np.random.default_rng(2)
    c = WORDS[rng.integers(0, 4096, 500)]
    r = (1.0 - 2.0 * c) + 0.5 * rng.standard_normal(c.shape)
    dec = CODE.decode_soft(r)
    rc, rs, gap = golay_soft_ref(r)
    np.testing.assert_allclose(score(dec, r), rs, rtol=1e-12)
    z = CODE.decode_soft(np.zeros(24))
    assert CODE.contains(z)


@settings(deadline=None, max_examples=50)
@given(st.integers(0, 4095), st.lists(st.integers(0, 23), max_size=3, unique=True),
       st.floats(0.1, 100.0))
def test_hard_decisions_up_to_three_flips(k, flips, amp):
    c = WORDS[k]
    r = amp * (1.0 - 2.0 * c.astype(np.float64))
    r[flips] = -r[flips]
    np.testing.assert_array_equal(CODE.decode_soft(r), c)


def test_shapes_empty_and_errors():
    rng = np.random.default_rng(3)
    r = rng.standard_normal((2, 3, 24))
    c = CODE.decode_soft(r)
    assert c.shape == (2, 3, 24)
    np.testing.assert_array_equal(c.reshape(-1, 24), CODE.decode_soft(r.reshape(-1, 24)))
    assert CODE.decode_soft(np.zeros((0, 24))).shape == (0, 24)
    assert _golay_decode_soft(np.zeros((0, 24))).shape == (0, 24)
    assert CODE.decode_soft(r[0, 0]).shape == (24,)
    with pytest.raises(ValueError, match="reliabilities"):
        CODE.decode_soft(np.full(24, np.nan))
    with pytest.raises(ValueError, match="reliabilities"):
        CODE.decode_soft(np.zeros(12))
    with pytest.raises(TypeError, match="reliabilities"):
        CODE.decode_soft(np.zeros(24, dtype=complex))
    with pytest.raises(ValueError, match="workers"):
        CODE.decode_soft(r, workers=-3)
    ro = r.reshape(-1, 24)[:, ::-1].copy()[:, ::-1]
    ro.flags.writeable = False
    np.testing.assert_array_equal(CODE.decode_soft(ro), c.reshape(-1, 24))
