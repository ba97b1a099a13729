"""Leech quantizers: the exact constrained search, BallQuantizer, ShapeGainQuantizer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import BallCodebook, GolayCode, LeechLattice, ShellCodebook, nearest_point, shell_count
from leechlib._kernels.reference import constrained_reference
from leechlib.constrained import _ball_points, _search, _shell_points
from leechlib.quantizers import (
    MIN_BITS_PER_DIM,
    BallQuantizer,
    ShapeGainQuantizer,
    constrained_nearest_point,
)

SQ8 = math.sqrt(8.0)


@pytest.fixture(scope="module")
def minvec():
    return LeechLattice().minimal_vectors(coords="int").astype(np.float64)


@pytest.fixture(scope="module")
def shell6_best():
    """Brute force over the 16 773 120 norm-6 vectors for fixed test points.

    The points have quarter-integer coordinates, so float32 inner products with
    the (integer) shell vectors are exact.  Returns (points y (int frame), max
    <y, v> over shell 6, max over shell 4).
    """
    rng = np.random.default_rng(77)
    y = np.vstack([
        rng.standard_normal((5, 24)) * 2.0,
        rng.standard_normal((5, 24)) * 8.0,
        rng.standard_normal((4, 24)) * 40.0,
    ])
    y = np.rint(y * 4.0) / 4.0
    y[-1] = 0.0
    y[-1, :2] = [12.0, 12.0]  # ties among the norm-6 vectors
    v4 = LeechLattice().minimal_vectors(coords="int").astype(np.float64)
    best6 = np.full(len(y), -np.inf, dtype=np.float32)
    y32 = np.ascontiguousarray(y.T, dtype=np.float32)
    for chunk in LeechLattice().shell(6, coords="int", chunk_size=1 << 21):
        best6 = np.maximum(best6, (chunk.astype(np.float32) @ y32).max(axis=0))
    best4 = (v4 @ y.T).max(axis=0)
    return y, best6.astype(np.float64), best4


def _is_lattice(p):
    return LeechLattice().contains(np.rint(p).astype(np.int64), coords="int")


def _ball4_brute(y, minvec):
    """Squared distance to the nearest point of the ball of norm 32 (int frame)."""
    yy = (y * y).sum(axis=1)
    best = (y @ minvec.T).max(axis=1)
    return np.minimum(yy, yy + 32.0 - 2.0 * best)


# ---------------------------------------------------------------------------
# the constrained search
# ---------------------------------------------------------------------------


def _hard_points(rng, minvec):
    """Random points at many scales, near the norm-32 boundary, ties, exact hits."""
    pts = [rng.standard_normal((8, 24)) * s for s in (0.5, 2.0, 5.0, 15.0, 60.0)]
    v = minvec[rng.integers(len(minvec), size=8)]
    pts.append(v * (1.0 + 0.05 * rng.standard_normal((8, 1))))  # near the boundary
    pts.append(v + 0.3 * rng.standard_normal((8, 24)))
    pts.append(v * 3.0)  # far out, along a codeword: many near ties
    pts.append((v + minvec[rng.integers(len(minvec), size=8)]) / 2.0)  # midpoints: ties
    e = np.zeros((3, 24))
    e[0, 0] = 50.0  # along an axis: ties between (4, ±4, 0...) codewords
    e[1, :] = 10.0  # the all-ones direction
    e[2, :8] = 1.0  # half a deep hole
    pts.append(e)
    pts.append(np.zeros((1, 24)))
    pts.append(v)  # exact codewords
    return np.vstack(pts)


def test_ball4_exact_vs_brute_force(minvec):
    y = _hard_points(np.random.default_rng(1), minvec)
    p = _ball_points(y.copy(), 32)
    assert _is_lattice(p).all()
    assert ((p * p).sum(axis=1) <= 32).all()
    d = ((y - p) ** 2).sum(axis=1)
    np.testing.assert_allclose(d, _ball4_brute(y, minvec), rtol=1e-12, atol=1e-9)


def test_shell4_exact_vs_brute_force(minvec):
    y = _hard_points(np.random.default_rng(2), minvec)
    p = _shell_points(y.copy(), 32)
    assert _is_lattice(p).all() and ((p * p).sum(axis=1) == 32).all()
    # nearest shell point <=> largest inner product
    np.testing.assert_allclose((y * p).sum(axis=1), (y @ minvec.T).max(axis=1),
                               rtol=1e-12, atol=1e-9)


def test_shell6_ball6_annulus_exact_vs_brute_force(shell6_best):
    y, best6, best4 = shell6_best
    p6 = _shell_points(y.copy(), 48)
    assert _is_lattice(p6).all() and ((p6 * p6).sum(axis=1) == 48).all()
    np.testing.assert_allclose((y * p6).sum(axis=1), best6, rtol=1e-12, atol=1e-9)
    yy = (y * y).sum(axis=1)
    d4 = yy + 32 - 2 * best4
    d6 = yy + 48 - 2 * best6
    for lo, hi, want in ((0, 48, np.minimum(np.minimum(yy, d4), d6)),
                         (32, 48, np.minimum(d4, d6))):
        p, d = constrained_nearest_point(y, min_norm=lo, max_norm=hi, coords="int",
                                         return_distance=True)
        n = (p * p).sum(axis=1)
        assert ((n >= lo) & (n <= hi)).all() and _is_lattice(p).all()
        np.testing.assert_allclose(d, want, rtol=1e-12, atol=1e-8)


def _kernel_one(y, lo, hi):
    p, d, _ = _search(y[None], lo, hi, np.ones((1, 1)))
    return p[0], d[0]


@pytest.mark.parametrize("lo,hi,scale", [(0, 32, 6.0), (32, 32, 3.0), (0, 64, 12.0),
                                         (48, 48, 1.0), (32, 64, 20.0), (64, 64, 9.0)])
def test_kernel_matches_reference(lo, hi, scale):
    U = GolayCode().codewords()
    rng = np.random.default_rng(lo * 7 + hi)
    for y in rng.standard_normal((2, 24)) * scale:
        pk, dk = _kernel_one(y, lo, hi)
        pr, dr = constrained_reference(y, lo, hi, U)
        assert dk == pytest.approx(dr, rel=1e-12, abs=1e-9)
        for p in (pk, pr):
            assert lo <= (p * p).sum() <= hi and _is_lattice(p[None])[0]
            assert ((y - p) ** 2).sum() == pytest.approx(dr, rel=1e-12, abs=1e-9)


def test_kernel_matches_reference_large_ball():
    """The 2-bit ball (norm 208 in the integer frame), overloaded points."""
    U = GolayCode().codewords()
    rng = np.random.default_rng(5)
    y = rng.standard_normal((2, 24)) * 4.5
    p = _ball_points(y.copy(), 208)
    for k in range(2):
        pr, dr = constrained_reference(y[k], 0, 208, U)
        assert ((y[k] - p[k]) ** 2).sum() == pytest.approx(dr, rel=1e-12)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hi=st.sampled_from([32, 48, 64, 80]),
       shell=st.booleans(), scale=st.floats(0.5, 30.0))
def test_kernel_matches_reference_hypothesis(seed, hi, shell, scale):
    U = GolayCode().codewords()
    y = np.random.default_rng(seed).standard_normal(24) * scale
    lo = hi if shell else 0
    _, dk = _kernel_one(y, lo, hi)
    _, dr = constrained_reference(y, lo, hi, U)
    assert dk == pytest.approx(dr, rel=1e-12, abs=1e-9)


def test_upper_bound_start_does_not_change_the_answer(minvec):
    """Starting from a feasible point (as the ball path does) or from none agrees."""
    rng = np.random.default_rng(9)
    y = rng.standard_normal((12, 24)) * 3.0
    p1, d1, _ = _search(y, 0, 32, np.ones((12, 1)))
    ub = minvec[rng.integers(len(minvec), size=12)]
    p2, d2, _ = _search(y, 0, 32, np.full((12, 1), 0.5), ub, np.ones(12, dtype=bool))
    np.testing.assert_allclose(d1, d2, rtol=1e-12)
    np.testing.assert_allclose(d1, _ball4_brute(y, minvec), rtol=1e-12)


def test_integer_inputs_are_exact_and_ties_deterministic(minvec):
    # (8, 0, ..., 0) is at distance 32 from 0, (4, ±4, 0...) pairs, and 4 e_0 ± 4 e_j:
    # many ties; the answer is a nearest codeword and repeatable
    y = np.zeros((3, 24))
    y[0, 0] = 8.0
    y[1, :2] = 6.0
    y[2, [0, 5]] = [4.0, -4.0]
    p1 = _ball_points(y.copy(), 32)
    p2 = _ball_points(y.copy(), 32)
    assert np.array_equal(p1, p2)
    np.testing.assert_array_equal(((y - p1) ** 2).sum(axis=1), _ball4_brute(y, minvec))


def test_constrained_nearest_point_public(minvec):
    x = np.random.default_rng(3).standard_normal((5, 24)) * 3.0
    p, d = constrained_nearest_point(x, max_norm=4, return_distance=True)
    assert p.shape == x.shape and d.shape == (5,)
    y = x * SQ8
    np.testing.assert_allclose(d * 8, _ball4_brute(y, minvec), rtol=1e-12)
    with pytest.raises(ValueError, match="min_norm"):
        constrained_nearest_point(x, min_norm=6, max_norm=4)
    with pytest.raises(ValueError, match="no lattice vector"):
        constrained_nearest_point(x, min_norm=1, max_norm=2)
    with pytest.raises(ValueError, match="x"):
        constrained_nearest_point(np.full((2, 24), np.nan), max_norm=4)


# ---------------------------------------------------------------------------
# off-shell inputs: exact, and as little work as on the shell (issue #24, item 12)
# ---------------------------------------------------------------------------

#: magnitudes |y| (integer frame) off the shells: inside, near, the old slow band
#: (4.9 to 1e4 in unit coordinates), and just below the input limit 2**30
_OFF_SHELL = (1e-3, 1.0, 4.9 * SQ8, 100.0, 1e4 * SQ8, 0.9 * 2.0**30)


def _directions(rng, n):
    y = rng.standard_normal((n, 24))
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_shell_search_exact_off_the_shell(minvec):
    """min_norm = max_norm = 4 (unit): the answer has the largest inner product with
    x at every magnitude, and near the shell (x = v (1 +- 5%), v a shell vector)."""
    rng = np.random.default_rng(12)
    u = _directions(rng, 6)
    v = minvec[rng.integers(len(minvec), size=6)]
    pts = [u * r for r in _OFF_SHELL]
    pts += [v * (1.0 + 0.05 * rng.standard_normal((6, 1))), v + 0.3 * rng.standard_normal((6, 24))]
    y = np.vstack(pts)
    p = constrained_nearest_point(y, min_norm=32, max_norm=32, coords="int")
    assert _is_lattice(p).all() and ((p * p).sum(axis=1) == 32).all()
    best = (y @ minvec.T).max(axis=1)
    scale = np.linalg.norm(y, axis=1) * SQ8 * 2
    np.testing.assert_allclose((y * p).sum(axis=1) / scale, best / scale, rtol=0, atol=1e-13)


def test_range_search_exact_off_the_shells():
    """min_norm 4 to max_norm 8 (unit): against the exhaustive DP at magnitudes from
    inside the hole to 1e4, and on either side of the inner and outer spheres."""
    U = GolayCode().codewords()
    rng = np.random.default_rng(13)
    u = _directions(rng, len(_OFF_SHELL) - 1)
    y = [u[k] * r for k, r in enumerate(_OFF_SHELL[:-1])]
    y += [u[k] * r for k, r in enumerate((math.sqrt(32) * 0.97, math.sqrt(32) * 1.03,
                                          math.sqrt(64) * 0.97, math.sqrt(64) * 1.03))]
    y = np.array(y)
    p, d = constrained_nearest_point(y, min_norm=32, max_norm=64, coords="int",
                                     return_distance=True)
    n = (p * p).sum(axis=1)
    assert ((n >= 32) & (n <= 64)).all() and _is_lattice(p).all()
    for k in range(len(y)):
        _, dr = constrained_reference(y[k], 32, 64, U)
        assert d[k] == pytest.approx(dr, rel=1e-12, abs=1e-9), k


def test_off_shell_search_does_the_work_of_on_shell():
    """Counting work, not time: the cosets visited for off-shell rows are those of
    the same directions on the shell's sphere (before: every one of the 8192 cosets
    per row at |x| = 100)."""
    u = _directions(np.random.default_rng(14), 40)
    for n in (32, 48, 64):
        _, _, ref = _shell_points(u * math.sqrt(n), n, return_stats=True)
        for r in _OFF_SHELL:
            _, _, vis = _shell_points(u * r, n, return_stats=True)
            assert vis.sum() <= 2 * ref.sum() + 50, (n, r)
    # a range: the ball's search answers the rows outside the inner sphere (its own
    # work grows only near the input limit), the shells those inside
    from leechlib.constrained import _range_points

    _, ref = _range_points(u * math.sqrt(64), 32, 64, return_stats=True)
    for r in _OFF_SHELL[:-1]:
        _, vis = _range_points(u * r, 32, 64, return_stats=True)
        assert vis.sum() <= 2 * ref.sum() + 50 * len(u), r


# ---------------------------------------------------------------------------
# BallQuantizer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(2024)
    return rng.standard_normal((1000, 24)), rng.standard_normal((1500, 24))


@pytest.fixture(scope="module")
def ball_q(gauss):
    return BallQuantizer(2.0).fit(gauss[0], max_points=1000, iters=12)


@pytest.fixture(scope="module")
def sg_q(gauss):
    return ShapeGainQuantizer(2.0).fit(gauss[0])


def test_ball_rate():
    q = BallQuantizer(2.0)
    assert q.max_norm == 26 and q.size == 280974212784721
    assert q.bits_per_dim == math.log2(280974212784721) / 24 <= 2.0
    assert q.size == BallCodebook(26).size


@settings(max_examples=25, deadline=None)
@given(b=st.floats(MIN_BITS_PER_DIM, 2.5))
def test_ball_rate_is_the_largest_ball_within_budget(b):
    q = BallQuantizer(b)
    assert q.bits_per_dim <= b + 1e-12
    if q.max_norm < 56:
        bigger = q.size + shell_count(q.max_norm + 2)
        assert math.log2(bigger) / 24 > b


def test_ball_gaussian_mse_band(ball_q, gauss):
    # measured (benchmarks/bench_quantizers.py, 40 000 blocks): 0.0770 at 2 bits/dim
    x = gauss[1]
    mse = float(np.mean((ball_q.quantize(x) - x) ** 2))
    assert 0.074 < mse < 0.080
    assert 0.90 < ball_q.scale < 1.06


def test_ball_round_trip_and_codes(ball_q, gauss):
    x = gauss[1][:300]
    codes = ball_q.encode(x)
    assert codes.dtype == np.int64 and codes.shape == (300,)
    assert codes.min() >= 0 and codes.max() < ball_q.size
    xh = ball_q.decode(codes)
    np.testing.assert_array_equal(xh, ball_q.quantize(x))
    # decoded points are codewords: back to the same indices
    assert np.array_equal(ball_q.encode(xh), codes)
    v = xh / ball_q.scale
    assert ((v * v).sum(axis=1) <= 26 + 1e-9).all()
    # batch shapes
    assert ball_q.encode(x.reshape(3, 100, 24)).shape == (3, 100)
    assert ball_q.decode(codes.reshape(3, 100)).shape == (3, 100, 24)
    assert ball_q.encode(x[0]).shape == ()


def test_ball_is_the_nearest_codeword(ball_q, gauss):
    """Ball of norm 26, heavy overload: no feasible candidate of the shrink heuristic is nearer."""
    x = gauss[1][:400] * 1.3  # heavy overload
    xh = ball_q.quantize(x)
    d = ((x - xh) ** 2).sum(axis=1)
    y = x * SQ8 / ball_q.scale
    # any feasible point is no nearer: nearest points of shrunk inputs inside the ball
    for t in (0.6, 0.7, 0.8, 0.9):
        q = nearest_point(y * t, coords="int")
        ok = (q * q).sum(axis=1) <= 208
        dq = ((y - q) ** 2).sum(axis=1) * (ball_q.scale**2 / 8)
        assert (d[ok] <= dq[ok] + 1e-9).all()


def test_ball_min_rate_exact(minvec):
    q = BallQuantizer(MIN_BITS_PER_DIM, scale=0.5)
    assert q.max_norm == 4 and q.size == 196561
    x = np.random.default_rng(4).standard_normal((60, 24)) * 0.8
    xh = q.quantize(x)
    y = x * SQ8 / 0.5
    d = ((x - xh) ** 2).sum(axis=1) * 8 / 0.25
    np.testing.assert_allclose(d, _ball4_brute(y, minvec), rtol=1e-12)
    assert np.array_equal(q.decode(q.encode(x)), xh)


def test_ball_fit_improves_mse(gauss):
    x = gauss[0][:600]
    bad = BallQuantizer(2.0, scale=0.4)
    good = BallQuantizer(2.0).fit(x, iters=10)
    e_bad = np.mean((bad.quantize(x) - x) ** 2)
    e_good = np.mean((good.quantize(x) - x) ** 2)
    assert e_good < 0.7 * e_bad
    # the fitted scale is (near) a minimum: nudging it does not help much
    for f in (0.9, 1.1):
        q = BallQuantizer(2.0, scale=good.scale * f)
        assert np.mean((q.quantize(x) - x) ** 2) > e_good - 1e-4


def test_ball_float32_and_scale_invariance(ball_q, gauss):
    x = gauss[1][:50]
    np.testing.assert_array_equal(ball_q.encode(x.astype(np.float32)),
                                  ball_q.encode(x.astype(np.float32).astype(np.float64)))
    q2 = BallQuantizer(2.0, scale=ball_q.scale * 3.0)
    np.testing.assert_array_equal(q2.encode(x * 3.0), ball_q.encode(x))


# ---------------------------------------------------------------------------
# ShapeGainQuantizer
# ---------------------------------------------------------------------------


def test_shape_gain_rate():
    q = ShapeGainQuantizer(2.0)
    assert q.shells == (24,) and q.gain_levels == 3
    assert q.shape_size == 70486236999360
    assert q.bits_per_dim == pytest.approx(math.log2(70486236999360 * 3) / 24) and \
        q.bits_per_dim <= 2.0
    q = ShapeGainQuantizer(2.0, shells=(20, 22))
    assert q.gain_levels == int(2**48 // (9486551299680 + 27052945920000))
    assert q.bits_per_dim <= 2.0
    assert ShapeGainQuantizer(2.0, shells=18, gain_levels=64).bits_per_dim == pytest.approx(
        (math.log2(2975551488000) + 6) / 24)


@settings(max_examples=25, deadline=None)
@given(b=st.floats(MIN_BITS_PER_DIM, 2.5))
def test_shape_gain_rate_within_budget(b):
    q = ShapeGainQuantizer(b)
    assert q.bits_per_dim <= b + 1e-12
    assert q.gain_levels >= 1
    # the gain levels are all that fit
    assert math.log2(q.shape_size) + math.log2(q.gain_levels + 1) > 24 * b or \
        q.gain_levels == 65536


def test_shape_gain_gaussian_mse_band(sg_q, gauss):
    # measured (benchmarks/bench_quantizers.py, 40 000 blocks): 0.0766 at 1.983 bits/dim
    x = gauss[1]
    mse = float(np.mean((sg_q.quantize(x) - x) ** 2))
    assert 0.0735 < mse < 0.0795
    assert np.all(np.diff(sg_q.gains) > 0) and sg_q.gains[0] > 0


def test_shape_gain_round_trip_and_codes(sg_q, gauss):
    x = gauss[1][:200]
    codes = sg_q.encode(x)
    assert codes.dtype == np.int64 and codes.shape == (200, 2)
    assert (codes[:, 0] >= 0).all() and (codes[:, 0] < sg_q.shape_size).all()
    assert (codes[:, 1] >= 0).all() and (codes[:, 1] < sg_q.gain_levels).all()
    xh = sg_q.decode(codes)
    np.testing.assert_array_equal(xh, sg_q.quantize(x))
    packed = sg_q.pack(codes)
    assert packed.max() < 2**48
    assert np.array_equal(sg_q.unpack(packed), codes)
    assert sg_q.encode(x.reshape(2, 100, 24)).shape == (2, 100, 2)
    assert sg_q.decode(codes.reshape(2, 100, 2)).shape == (2, 100, 24)


def test_shape_gain_exact_shape_small_shell(minvec):
    """Norm-4 shell directions: the largest projection, against brute force."""
    x = np.random.default_rng(6).standard_normal((300, 24))
    q = ShapeGainQuantizer(1.0, shells=4, gain_levels=4).fit(x)
    codes = q.encode(x)
    v = ShellCodebook(4, coords="int").point(codes[:, 0]).astype(np.float64)
    np.testing.assert_allclose((x * v).sum(axis=1), (x @ minvec.T).max(axis=1), rtol=1e-12)
    # gain: the level nearest to the projection
    c = (x * v).sum(axis=1) / math.sqrt(32)
    want = np.abs(c[:, None] - q.gains[None]).argmin(axis=1)
    assert np.array_equal(codes[:, 1], want)


def test_shape_gain_union_of_shells(shell6_best):
    y, best6, best4 = shell6_best
    q = ShapeGainQuantizer(1.2, shells=(4, 6), gain_levels=2)
    q.fit(y)
    codes = q.encode(y)
    is4 = codes[:, 0] < 196560
    want = np.maximum(best4 / math.sqrt(32), best6 / math.sqrt(48))
    xh = q.decode(codes)
    # direction = the shell vector with the largest <x, v>/||v|| over both shells
    u = xh / np.linalg.norm(xh, axis=1, keepdims=True)
    np.testing.assert_allclose((y * u).sum(axis=1), want, rtol=1e-12)
    assert np.array_equal(is4, best4 / math.sqrt(32) >= best6 / math.sqrt(48))


def test_shape_gain_fit_is_lloyd_max(gauss):
    x = gauss[0][:500]
    q = ShapeGainQuantizer(2.0, shells=20, gain_levels=8).fit(x)
    e = np.mean((q.quantize(x) - x) ** 2)
    good = q.gains.copy()
    for f in (0.8, 1.2):
        q.gains = good * f
        assert np.mean((q.quantize(x) - x) ** 2) > e
    q.gains = good
    # centroid condition: each level is the mean of the projections it codes
    codes = q.encode(x)
    v = ShellCodebook(20, coords="int").point(codes[:, 0]).astype(np.float64)
    c = (x * v).sum(axis=1) / math.sqrt(160)
    for k in range(8):
        sel = codes[:, 1] == k
        if sel.any():
            assert q.gains[k] == pytest.approx(c[sel].mean(), rel=1e-9)


def test_shape_gain_zero_block(sg_q):
    codes = sg_q.encode(np.zeros((2, 24)))
    assert codes.tolist() == [[0, 0], [0, 0]]
    assert np.allclose(np.linalg.norm(sg_q.decode(codes), axis=1), sg_q.gains[0])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BallQuantizer, ShapeGainQuantizer])
def test_bad_rates(cls):
    with pytest.raises(ValueError, match="bits_per_dim"):
        cls(0.5)
    with pytest.raises(ValueError, match="bits_per_dim"):
        cls(3.0)
    with pytest.raises(ValueError, match="bits_per_dim"):
        cls(float("nan"))
    with pytest.raises(TypeError, match="bits_per_dim"):
        cls("2")
    with pytest.raises(TypeError, match="bits_per_dim"):
        cls(True)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="max_norm"):
        BallQuantizer(2.0, max_norm=28)
    with pytest.raises(ValueError, match="max_norm"):
        BallQuantizer(2.0, max_norm=25)
    with pytest.raises(ValueError, match="scale"):
        BallQuantizer(2.0, scale=-1.0)
    with pytest.raises(TypeError, match="scale"):
        BallQuantizer(2.0, scale="1")
    with pytest.raises(ValueError, match="bits_per_dim"):
        ShapeGainQuantizer(2.0, shells=24, gain_levels=5)
    with pytest.raises(ValueError, match="shells"):
        ShapeGainQuantizer(2.0, shells=(5,))
    with pytest.raises(ValueError, match="shells"):
        ShapeGainQuantizer(2.0, shells=(20, 20))
    with pytest.raises(ValueError, match="shells"):
        ShapeGainQuantizer(2.0, shells=())
    with pytest.raises(TypeError, match="shells"):
        ShapeGainQuantizer(2.0, shells=2.5)
    with pytest.raises(ValueError, match="gain_levels"):
        ShapeGainQuantizer(2.0, shells=24, gain_levels=0)


@pytest.mark.parametrize("which", ["ball", "sg"])
def test_bad_inputs(which, ball_q, sg_q):
    q = ball_q if which == "ball" else sg_q
    x = np.zeros((2, 24))
    x[0, 3] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        q.encode(x)
    x[0, 3] = np.inf
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        q.quantize(x)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 24\).*np\.pad"):
        q.encode(np.zeros((2, 25)))
    with pytest.raises(ValueError, match="x must have shape"):
        q.encode(np.zeros(48))
    with pytest.raises(ValueError, match="x is an empty batch"):
        q.encode(np.zeros((0, 24)))
    with pytest.raises(TypeError, match="x must be a real"):
        q.encode(np.zeros((2, 24), dtype=complex))
    with pytest.raises(ValueError, match="x must have shape"):
        q.fit(np.zeros((3, 23)))
    if which == "ball":
        with pytest.raises(ValueError, match="codes out of range"):
            q.decode(np.array([q.size]))
        with pytest.raises(ValueError, match="codes out of range"):
            q.decode(np.array([-1]))
        with pytest.raises(ValueError, match="codes"):
            q.decode(np.array([2**63 + 5], dtype=np.uint64))
    else:
        with pytest.raises(ValueError, match=r"codes\[\.\.\., 0\] out of range"):
            q.decode(np.array([[q.shape_size, 0]]))
        with pytest.raises(ValueError, match=r"codes\[\.\.\., 1\] out of range"):
            q.decode(np.array([[0, q.gain_levels]]))
        with pytest.raises(ValueError, match=r"codes must have shape \(\.\.\., 2\)"):
            q.decode(np.array([1, 2, 3]))
        with pytest.raises(ValueError, match="packed out of range"):
            q.unpack(np.array([q.shape_size * q.gain_levels]))
    with pytest.raises(TypeError, match="codes must be an integer array"):
        q.decode(np.array([[0.0, 1.0]]))


def test_unfitted_and_degenerate():
    with pytest.raises(RuntimeError, match="fit"):
        BallQuantizer(2.0).encode(np.zeros(24))
    with pytest.raises(RuntimeError, match="fit"):
        ShapeGainQuantizer(2.0).decode(np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="all zeros"):
        BallQuantizer(2.0).fit(np.zeros((4, 24)))
    with pytest.raises(ValueError, match="all zeros"):
        ShapeGainQuantizer(2.0).fit(np.zeros((4, 24)))
    with pytest.raises(ValueError, match="too large"):
        BallQuantizer(2.0, scale=1e-12).encode(np.ones(24))
    with pytest.raises(ValueError, match="max_points"):
        BallQuantizer(2.0).fit(np.ones((4, 24)), max_points=0)


_NOJIT = r"""
import numpy as np
from leechlib.constrained import _ball_points, _shell_points
y = np.random.default_rng(0).standard_normal((2, 24)) * 3
print(repr(_ball_points(y.copy(), 32).tolist()), repr(_shell_points(y[:1].copy(), 48).tolist()))
"""


def test_kernels_agree_without_jit():
    """NUMBA_DISABLE_JIT=1 runs the same code as plain Python: same points."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = []
    for flag in ("1", "0"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=flag)
        res = subprocess.run([sys.executable, "-c", _NOJIT], capture_output=True, text=True,
                             cwd=root, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
    assert outs[0] == outs[1]


def test_shape_gain_shapes_are_scale_invariant(sg_q, gauss):
    x = gauss[1][:20]
    want = sg_q.encode(x)[:, 0]
    for s in (1e-300, 1e-5, 1e5, 1e300):
        assert np.array_equal(sg_q.encode(x * s)[:, 0], want)


def test_fit_of_huge_values_without_warnings():
    """Fits at 1e300 (refused before the fit was scale-equivariant) and 1e-300 (no
    underflow into "all zeros") scale like the data, with no warnings; data whose
    codewords would overflow are refused by name (tests/test_extreme_inputs.py)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s1 = BallQuantizer().fit(np.full((4, 24), 1.0)).scale
        for s in (1e300, 1e-300):
            assert BallQuantizer().fit(np.full((4, 24), s)).scale == pytest.approx(s * s1,
                                                                                   rel=1e-12)
        with pytest.raises(ValueError, match="x cannot be fitted") as info:
            BallQuantizer().fit(np.full((4, 24), 1.7e308))
        assert "NaN" not in str(info.value)
