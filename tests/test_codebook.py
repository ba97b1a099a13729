"""Shell and ball codebooks: exact index <-> point maps without a stored codebook."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import BallCodebook, LeechLattice, ShellCodebook, theta_series
from leechlib._kernels.ranking import rank_reference, unrank_reference
from leechlib.codebook import _tables


@pytest.fixture(scope="module")
def ball():
    return BallCodebook()


def test_ball_size_is_the_2_bit_codebook(ball):
    assert ball.size == sum(theta_series(14)) == 280974212784721
    assert ball.bits == 48
    assert list(ball.shell_sizes) == [c for c in theta_series(14) if c]
    assert ball.shell_norms == (0,) + tuple(range(4, 27, 2))


@pytest.mark.parametrize("norm", [4, 6, 8, 10, 26])
def test_shell_sizes_match_theta(norm):
    assert ShellCodebook(norm).size == theta_series(norm // 2 + 1)[norm // 2]


def test_odd_and_empty_shells():
    assert ShellCodebook(5).size == 0 and ShellCodebook(2).size == 0


def test_shell_4_is_the_minimal_vectors_in_full():
    cb = ShellCodebook(4, coords="int")
    p = cb.point(np.arange(cb.size))
    mv = LeechLattice().minimal_vectors(coords="int")
    assert {r.tobytes() for r in p} == {r.tobytes() for r in mv}
    assert np.array_equal(cb.index(p), np.arange(cb.size))


@pytest.mark.parametrize("norm", [4, 6])
def test_against_explicit_enumeration(norm, rng):
    cb = ShellCodebook(norm, coords="int")
    t = _tables(8 * norm)
    from leechlib import GolayCode

    code = GolayCode().codewords()
    ranks = np.unique(np.concatenate([
        [0, 1, cb.size - 1],
        rng.integers(0, cb.size, 12),
    ]))
    ref_points = unrank_reference(ranks, 8 * norm, code, t.values)
    assert np.array_equal(cb.point(ranks).astype(np.int64), ref_points)
    assert np.array_equal(rank_reference(ref_points, 8 * norm, code, t.values), ranks)


def test_shell_6_block_boundaries(rng):
    cb = ShellCodebook(6, coords="int")
    starts = cb._blocks[0]
    idx = np.unique(np.concatenate([starts, starts - 1, [cb.size - 1]]))
    idx = idx[(idx >= 0) & (idx < cb.size)]
    p = cb.point(idx)
    assert LeechLattice().contains(p, coords="int").all()
    assert np.all((p.astype(int) ** 2).sum(axis=1) == 48)
    assert np.array_equal(cb.index(p), idx)


def test_ball_random_roundtrip(ball, rng):
    idx = rng.integers(0, ball.size, 20000, dtype=np.int64)
    p = ball.point(idx)
    assert LeechLattice().contains(p).all()
    assert np.array_equal(ball.index(p), idx)
    norms = np.rint((p * p).sum(axis=1)).astype(int)
    which = np.searchsorted(np.array(ball.shell_offsets), idx, side="right") - 1
    assert np.array_equal(norms, np.array(ball.shell_norms)[which])


def test_ball_boundaries(ball):
    offs = np.array(ball.shell_offsets, dtype=np.int64)
    idx = np.unique(np.concatenate([offs, offs[1:] - 1, [ball.size - 1]]))
    p = ball.point(idx)
    assert np.array_equal(ball.index(p), idx)
    assert np.all(p[0] == 0)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 280974212784720))
def test_ball_roundtrip_hypothesis(ball, i):
    p = ball.point(np.array([i]))
    assert int(ball.index(p)[0]) == i


def test_int_coords_and_shapes():
    cb = BallCodebook(8, coords="int")
    p = cb.point(np.arange(12).reshape(3, 4))
    assert p.shape == (3, 4, 24) and p.dtype == np.int8
    assert cb.index(p).shape == (3, 4)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda cb: cb.point(np.array([-1])), ValueError, r"indices out of range"),
        (lambda cb: cb.point(np.array([cb.size])), ValueError, r"indices out of range"),
        (lambda cb: cb.point(np.array([1.0])), TypeError, r"indices must be an integer"),
        (lambda cb: cb.index(np.zeros(23)), ValueError, r"points must have shape"),
        (lambda cb: cb.index(np.full(24, 0.3)), ValueError, r"not lattice points"),
        (lambda cb: cb.index(np.full(24, np.nan)), ValueError, r"NaN"),
        (lambda cb: cb.index(np.eye(24)[0] * 16 / np.sqrt(8)), ValueError, r"norm <= 26"),
    ],
)
def test_bad_input(ball, call, exc, match):
    with pytest.raises(exc, match=match):
        call(ball)


def test_shell_index_rejects_other_shells():
    cb = ShellCodebook(6)
    x = LeechLattice().minimal_vectors()[:2]
    with pytest.raises(ValueError, match="norm-6 shell"):
        cb.index(x)


def test_constructor_validation():
    with pytest.raises(ValueError, match="max_norm"):
        BallCodebook(max_norm=100)
    with pytest.raises(TypeError, match="norm must be an int"):
        ShellCodebook(4.0)
    with pytest.raises(ValueError, match="coords"):
        BallCodebook(coords="cartesian")


def test_index_rejects_huge_points_instead_of_overflowing():
    # int64 norms of entries near 2**32 wrapped around to small norms, and a float
    # beyond int64 was cast to garbage: unrelated indices came back
    big = np.iinfo(np.int64)
    z = np.zeros(24, np.int64)
    z[:3] = [2**32, 4, 4]
    with pytest.raises(ValueError, match="points are not all vectors of the norm-4 shell"):
        ShellCodebook(4, coords="int").index(z)
    with pytest.raises(ValueError, match="points are not all lattice vectors of norm <= 26"):
        BallCodebook(coords="int").index(np.r_[2**32, np.zeros(23)].astype(np.int64))
    with pytest.raises(ValueError, match="points are not all lattice vectors"):
        BallCodebook().index(np.full(24, 1e20))
    with pytest.raises(ValueError, match="points are not all lattice vectors"):
        BallCodebook().index(np.full(24, 1e308))  # overflows to inf when scaled
    for v in (big.min, big.max, 2**31, -(2**31) - 4):
        w = np.zeros((2, 24), np.int64)
        w[:, :2] = 4
        w[1, 5] = v
        with pytest.raises(ValueError, match="points"):
            ShellCodebook(4, coords="int").index(w)
        with pytest.raises(ValueError, match="points"):
            BallCodebook(coords="int").index(w)
    # the largest entries a codebook has are still fine
    cb = BallCodebook(coords="int")
    far = cb.point(cb.size - 1)
    assert int(cb.index(far)) == cb.size - 1
