"""The fused encoders against the original ones (``benchmarks/original_encoders.py``).

The quantizers encode with one kernel pass (:mod:`leechlib._kernels.encode`:
decode, then the windowed constrained search of :mod:`leechlib._kernels.constrained`
where the nearest lattice point misses the codebook) and index with
:func:`leechlib._kernels.ranking.rank_union_kernel`.  The original wrappers are
kept as the reference: same codes on random inputs; on exact ties (where either
may return any nearest codeword) the same distance.  Brute force over explicit
codebooks is in ``tests/test_quantizers.py``.
"""

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import LeechLattice
from leechlib.constrained import _ball_points, _search, _shell_points
from leechlib.quantizers import BallQuantizer, ShapeGainQuantizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_original():
    """``benchmarks/original_encoders.py``, by its path (benchmarks/ is not a package)."""
    path = os.path.join(ROOT, "benchmarks", "original_encoders.py")
    spec = importlib.util.spec_from_file_location("original_encoders", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


original = _load_original()
_NO_UB_ARGS = (np.zeros((1, 24)), np.zeros(1, dtype=np.bool_))


@pytest.fixture(scope="module")
def minvec():
    return LeechLattice().minimal_vectors(coords="int").astype(np.float64)


@pytest.fixture(scope="module")
def blocks():
    rng = np.random.default_rng(2024)
    gauss = rng.standard_normal((400, 24))
    heavy = rng.standard_t(3, size=(400, 24)) * rng.uniform(0.3, 3.0, size=(400, 1))
    return gauss, heavy


@pytest.fixture(scope="module", params=[2.0, 1.5], ids=["2bit", "1.5bit"])
def quantizers(request, blocks):
    b = request.param
    fit = blocks[0][:300]
    return (ShapeGainQuantizer(b).fit(fit), BallQuantizer(b).fit(fit))


def _adversarial(rng, minvec, scale):
    """Blocks (input frame of a quantizer of ``scale``) that stress the encoders:
    zero blocks, lattice points on and near the boundary of the 2-bit ball, exact
    codewords, far outliers, single spikes, near-constant blocks."""
    unit = LeechLattice().minimal_vectors(coords="unit")
    v = unit[rng.integers(len(unit), size=12)].astype(np.float64)
    b26 = v * math.sqrt(26 / 4)  # a direction at the norm of the outer shell
    pts = [
        np.zeros((3, 24)),
        v * scale,  # codewords of the minimal shell
        b26 * scale * (1 + 1e-9),  # just outside the outer shell's radius
        b26 * scale * (1 - 1e-9),
        v * scale * 40.0,  # far overload along a codeword
        np.eye(24)[:6] * 30.0 * scale,  # one spike
        np.full((2, 24), 1e-3) + rng.standard_normal((2, 24)) * 1e-9,
        rng.standard_normal((6, 24)) * scale * 1e-6,  # tiny blocks
    ]
    return np.vstack(pts)


def _sg_check(q, x, workers=None):
    """Shape-gain codes agree with the original; where they differ, both are optimal
    (a tie): the same projection and gain index."""
    new = q.encode(x, workers=workers)
    old = original.shape_gain_encode(q, x, workers=workers)
    diff = np.any(new != old, axis=-1)
    if diff.any():
        xn = q.decode(new[diff])
        xo = q.decode(old[diff])
        assert np.array_equal(new[diff, 1], old[diff, 1])
        pn = (xn * x[diff]).sum(axis=1) / np.linalg.norm(xn, axis=1)
        po = (xo * x[diff]).sum(axis=1) / np.linalg.norm(xo, axis=1)
        np.testing.assert_allclose(pn, po, rtol=1e-12, atol=1e-12)
    return diff.sum()


def _ball_check(q, x, workers=None):
    new = q.encode(x, workers=workers)
    old = original.ball_encode(q, x, workers=workers)
    diff = new != old
    if diff.any():
        dn = ((q.decode(new[diff]) - x[diff]) ** 2).sum(axis=1)
        do = ((q.decode(old[diff]) - x[diff]) ** 2).sum(axis=1)
        np.testing.assert_allclose(dn, do, rtol=1e-12, atol=1e-12)
    return diff.sum()


def test_codes_identical_on_random_blocks(quantizers, blocks):
    sg, ball = quantizers
    for x in blocks:
        assert np.array_equal(sg.encode(x), original.shape_gain_encode(sg, x))
        assert np.array_equal(ball.encode(x), original.ball_encode(ball, x))


def test_codes_identical_with_threads(quantizers, blocks):
    sg, ball = quantizers
    x = blocks[1]
    assert np.array_equal(sg.encode(x, workers=-1), sg.encode(x, workers=1))
    assert np.array_equal(ball.encode(x, workers=-1), ball.encode(x, workers=1))


def test_adversarial_blocks(quantizers, minvec):
    sg, ball = quantizers
    rng = np.random.default_rng(5)
    for q, check in ((sg, _sg_check), (ball, _ball_check)):
        scale = ball.scale
        x = _adversarial(rng, minvec, scale)
        check(q, x)
        # deterministic, and invariant to the batch it comes in
        a = q.encode(x)
        assert np.array_equal(a, q.encode(x))
        assert np.array_equal(a[5:9], q.encode(x[5:9]))
    # zero blocks: shape index 0 and the smallest gain; the ball's origin
    z = np.zeros((2, 24))
    assert sg.encode(z).tolist() == [[0, 0], [0, 0]]
    assert ball.encode(z).tolist() == [0, 0]


def test_ties_give_a_nearest_codeword(quantizers, minvec):
    """Midpoints of two codewords and points along the axes: exact ties."""
    sg, ball = quantizers
    rng = np.random.default_rng(8)
    unit = LeechLattice().minimal_vectors(coords="unit").astype(np.float64)
    a = unit[rng.integers(len(unit), size=20)]
    b = unit[rng.integers(len(unit), size=20)]
    for s in (1.0, 2.5, 6.0):
        x = np.vstack([(a + b) / 2 * s, np.eye(24)[:4] * s * 4])
        _sg_check(sg, x)
        _ball_check(ball, x * ball.scale)


def test_huge_and_bad_blocks_rejected_alike(quantizers):
    sg, ball = quantizers
    x = np.full((1, 24), 1e300)
    # shape-gain is scale invariant: huge blocks are encoded like small ones
    assert np.array_equal(sg.encode(x)[:, 0], sg.encode(x * 1e-300)[:, 0])
    for fn in (ball.encode, lambda x: original.ball_encode(ball, x)):
        with pytest.raises(ValueError, match="too large"):
            fn(x)
    for fn in (sg.encode, ball.encode):
        with pytest.raises(ValueError):
            fn(np.full((1, 24), np.nan))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 20.0), heavy=st.booleans())
def test_codes_match_original_hypothesis(seed, scale, heavy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(2, size=(12, 24)) if heavy else rng.standard_normal((12, 24))) * scale
    sg, ball = _fitted()
    _sg_check(sg, x)
    _ball_check(ball, x)


_FITTED = {}


def _fitted():
    if not _FITTED:
        x = np.random.default_rng(0).standard_normal((300, 24))
        _FITTED["q"] = (ShapeGainQuantizer(2.0).fit(x), BallQuantizer(2.0).fit(x))
    return _FITTED["q"]


# ---------------------------------------------------------------- the search itself


@pytest.mark.parametrize("n_lo,n_hi,scale", [(192, 192, 1.0), (0, 208, 1.0), (32, 32, 3.0),
                                             (0, 48, 9.0), (176, 208, 1.2)])
def test_search_matches_original_kernel(n_lo, n_hi, scale):
    """The windowed search against the original kernel, with and without a start."""
    rng = np.random.default_rng(n_lo + n_hi)
    y = rng.standard_normal((60, 24))
    y *= scale * math.sqrt(max(n_hi, 32)) / np.linalg.norm(y, axis=1)[:, None]
    y[:20] *= rng.uniform(0.7, 1.5, size=(20, 1))
    ts = np.tile([0.93, 1.07] if n_lo == n_hi else [0.97], (60, 1))
    p1, d1, _ = _search(y, n_lo, n_hi, ts)
    p0, d0, _ = original.search(y, n_lo, n_hi, ts)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)
    assert np.array_equal(p1, p0)  # random points: no ties
    n = (p1 * p1).sum(axis=1)
    assert ((n >= n_lo) & (n <= n_hi)).all()
    # a feasible start (the answer of a nearby point) changes nothing
    ub, _, _ = _search(y + 0.5 * rng.standard_normal(y.shape), n_lo, n_hi, ts)
    p2, d2, _ = _search(y, n_lo, n_hi, ts, ub, np.ones(60, dtype=bool))
    np.testing.assert_allclose(d2, d1, rtol=1e-12)


def test_shell_and_ball_points_match_original():
    rng = np.random.default_rng(11)
    y = rng.standard_normal((300, 24))
    u = y / np.linalg.norm(y, axis=1)[:, None] * math.sqrt(192)
    assert np.array_equal(_shell_points(u, 192), original.shell_points(u, 192))
    z = y * 3.3
    assert np.array_equal(_ball_points(z, 208), original.ball_points(z, 208))



def test_ball_probe_on_the_outer_shell_is_optimal():
    """An overloaded row whose scale probe ``Q(t y)`` (t <= 1) lands on the outer shell
    is answered by that probe, without a search (visited 0): the Lagrangian argument
    makes it a nearest point of the ball.  Checked against the exhaustive DP."""
    from leechlib import GolayCode
    from leechlib._kernels.reference import constrained_reference

    U = GolayCode().codewords()
    rng = np.random.default_rng(21)
    y = rng.standard_normal((200, 24)) * 2.2
    p, over, visited = _ball_points(y, 64, return_stats=True)
    short = np.flatnonzero(over & (visited == 0))
    assert len(short) >= 5  # the path is taken
    assert (over & (visited > 0)).any()  # and the search too
    for k in short[:8]:
        assert (p[k] * p[k]).sum() == 64
        _, dr = constrained_reference(y[k], 0, 64, U)
        assert ((y[k] - p[k]) ** 2).sum() == pytest.approx(dr, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("n", [32, 96, 192])
def test_shell_probe_scale_changes_speed_not_answers(n):
    """The shell encoder's first decode is at ``t0 y``: any ``t0 > 0`` gives the same
    points (a lattice point of ``t0 y`` on the shell maximises ``<y, v>`` there);
    the chosen ``t0`` answers more rows without a search than ``t0 = 1``."""
    from leechlib import nearest_point
    from leechlib._kernels.encode import SHELL
    from leechlib.constrained import _SHELL_TS, _encode, _shell_probe_scale

    t0 = _shell_probe_scale(n)
    assert 0.5 <= t0 < 1.0
    assert t0 == pytest.approx(math.sqrt(1 - 24 * 0.065771 * 8 / n))
    rng = np.random.default_rng(n)
    y = rng.standard_normal((300, 24))
    y *= math.sqrt(n) / np.linalg.norm(y, axis=1)[:, None]
    ref = original.shell_points(y, n)
    hits = {}
    for t in (t0, 1.0, 0.8, 1.1):
        p, d, visited = _encode(SHELL, y, n, n, 0, _SHELL_TS, *_NO_UB_ARGS, None, t0=t)
        assert np.array_equal(p, ref)
        np.testing.assert_allclose(d, ((y - ref) ** 2).sum(axis=1), rtol=1e-12)
        hits[t] = int((visited < 0).sum())
        # the rows answered without a search are exactly those decoded onto the shell
        q = nearest_point(y * t, coords="int")
        assert np.array_equal(visited < 0, (q * q).sum(axis=1) == n)
    assert hits[t0] > hits[1.0]
    assert np.array_equal(_shell_points(y, n), ref)

def test_index_matches_original(quantizers, blocks):
    """rank_union_kernel (membership inside) against the original numpy membership
    test + rank kernel, on codebook points and on points outside."""
    sg, ball = quantizers
    x = blocks[0][:200]
    pts = ball._int_codebook.point(ball.encode(x))
    assert np.array_equal(ball._int_codebook.index(pts), original._index_ball(ball._int_codebook, pts))
    cb = sg._codebooks[0]
    sp = cb.point(sg.encode(x)[:, 0])
    assert np.array_equal(cb.index(sp), original._index_shell(cb, sp))
    bad = sp.copy()
    bad[:, 0] += 8  # in the lattice, not on the shell
    for fn in (cb.index, lambda p: original._index_shell(cb, p)):
        with pytest.raises(ValueError, match="shell"):
            fn(bad[:3])
    bad2 = pts.copy()
    bad2[:, 1] += 1  # not lattice points
    for fn in (ball._int_codebook.index, lambda p: original._index_ball(ball._int_codebook, p)):
        with pytest.raises(ValueError):
            fn(bad2[:3])


_NOJIT = r"""
import math
import numpy as np
from leechlib.constrained import _search, _shell_points
from leechlib.codebook import BallCodebook
rng = np.random.default_rng(3)
y = rng.standard_normal((4, 24))
u = y / np.linalg.norm(y, axis=1)[:, None] * math.sqrt(192)
p, d, v = _search(u * 1.1, 176, 208, np.tile([0.93, 1.07], (4, 1)))
cb = BallCodebook(26, coords="int")
print(repr(_shell_points(u, 192).tolist()), repr(p.tolist()), repr(d.tolist()), repr(v.tolist()),
      repr(cb.index(np.rint(p).astype(np.int64)).tolist()))
"""


def test_fused_kernels_agree_without_jit():
    """NUMBA_DISABLE_JIT=1 runs the same code as plain Python: the window, the
    deferred DPs and the index kernel give the same answers."""
    outs = []
    for flag in ("1", "0"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=flag)
        res = subprocess.run([sys.executable, "-c", _NOJIT], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=600)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
    assert outs[0] == outs[1]
