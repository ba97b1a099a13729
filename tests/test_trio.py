"""The trio code (leechlib.trio): index <-> point, exact nearest codeword, quantizer."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import LeechLattice, Quantizer
from leechlib.trio import TrioCodebook, TrioQuantizer


@pytest.fixture(scope="module")
def cb():
    return TrioCodebook()


@pytest.fixture(scope="module")
def small():
    """A reduced instance (2^17 codewords) and its explicit codebook."""
    c = TrioCodebook(tier_size=1, n_tiers=4, n_combos=4)
    return c, c.point(np.arange(c.size))


def test_size_and_bits(cb):
    assert cb.bits == 48 and cb.size == 2**48 and len(cb) == 2**48
    assert cb.table_bytes < 512 * 1024


def test_roundtrip_random_and_edges(cb, rng):
    edges = [0, 1, 255, 256, 2**24 - 1, 2**24, 2**33 - 1, 2**33, 2**47 - 1, 2**47, 2**48 - 1]
    idx = np.r_[edges, rng.integers(0, cb.size, 3000)]
    v = cb.point(idx)
    assert v.shape == (len(idx), 24) and v.dtype == np.int64
    assert LeechLattice().contains(v, coords="int").all()
    assert np.array_equal(cb.index(v), idx)
    assert np.array_equal(v, cb.point(idx, reference=True))


def test_index_shapes(cb):
    idx = np.arange(6).reshape(2, 3) * 12345678901
    v = cb.point(idx)
    assert v.shape == (2, 3, 24)
    assert np.array_equal(cb.index(v), idx)
    assert cb.point(np.zeros(0, dtype=np.int64)).shape == (0, 24)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.integers(0, 2**48 - 1), min_size=1, max_size=20))
def test_kernel_matches_reference_hypothesis(cb, ids):
    idx = np.array(ids, dtype=np.int64)
    assert np.array_equal(cb.point(idx), cb.point(idx, reference=True))


def test_small_codebook_is_distinct_lattice_points(small):
    c, pts = small
    assert LeechLattice().contains(pts, coords="int").all()
    assert len(np.unique(pts, axis=0)) == c.size
    assert np.array_equal(c.index(pts), np.arange(c.size))


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_nearest_is_exact_against_brute_force(small, rng, scale):
    c, pts = small
    y = rng.standard_normal((40, 24)) * 3.0 * scale
    got, scans = c.nearest(y, return_scans=True)
    d_got = ((y - got) ** 2).sum(1)
    d_all = ((y[:, None, :] - pts[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(d_got, d_all.min(1), rtol=1e-12, atol=1e-9)
    assert np.array_equal(c.index(got), d_all.argmin(1)) or np.allclose(d_got, d_all.min(1))


def test_nearest_matches_full_scan_on_gaussian_blocks(cb, rng):
    y = rng.standard_normal((2, 24)) * (np.sqrt(8) / 0.975)
    y[1] *= 1.6  # an overloaded block: the search must scan
    fast, scans = cb.nearest(y, return_scans=True)
    ref = cb.nearest(y, reference=True)
    np.testing.assert_allclose(((y - fast) ** 2).sum(1), ((y - ref) ** 2).sum(1), rtol=1e-12)
    assert scans[1] > 0


def test_nearest_of_codewords_is_themselves(cb, rng):
    v = cb.point(rng.integers(0, cb.size, 20))
    assert np.array_equal(cb.nearest(v.astype(np.float64)), v)


def test_bad_inputs(cb):
    with pytest.raises(TypeError, match="indices"):
        cb.point(np.array([1.0]))
    with pytest.raises(ValueError, match="indices"):
        cb.point(np.array([2**48]))
    with pytest.raises(ValueError, match="indices"):
        cb.point(np.array([-1]))
    with pytest.raises(TypeError, match="points"):
        cb.index(np.zeros((1, 24)))
    with pytest.raises(ValueError, match="points"):
        cb.index(np.zeros((1, 23), dtype=np.int64))
    bad = np.zeros((1, 24), dtype=np.int64)
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="not codewords"):
        cb.index(bad)
    far = np.zeros((1, 24), dtype=np.int64)
    far[0, :2] = 40  # a lattice vector beyond the tables
    with pytest.raises(ValueError, match="not codewords"):
        cb.index(far)
    with pytest.raises(ValueError, match="y"):
        cb.nearest(np.zeros((2, 23)))
    with pytest.raises(ValueError, match="tier_size"):
        TrioCodebook(tier_size=3)
    with pytest.raises(ValueError, match="n_combos"):
        TrioCodebook(n_combos=3)
    with pytest.raises(ValueError, match="n_combos"):
        TrioCodebook(n_tiers=2, n_combos=16)
    with pytest.raises(TypeError, match="tier_size"):
        TrioCodebook(tier_size=2.0)


def test_quantizer(rng):
    x = rng.standard_normal((200, 24))
    q = TrioQuantizer().fit(x, iters=6)
    assert isinstance(q, Quantizer) and q.bits_per_dim == 2.0 and q.bits == 48.0
    codes = q.encode(x[:20])
    assert codes.shape == (20,) and codes.dtype == np.int64
    np.testing.assert_allclose(q.decode(codes), q.quantize(x[:20]))
    assert 0.06 < float(np.mean((q.quantize(x) - x) ** 2)) < 0.1
    with pytest.raises(RuntimeError, match="fit"):
        TrioQuantizer().encode(x)
    with pytest.raises(ValueError, match="x"):
        q.encode(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="codes"):
        q.decode(np.zeros(3))


def test_kernels_run_without_jit():
    code = (
        "import numpy as np\n"
        "from leechlib.trio import TrioCodebook\n"
        "c = TrioCodebook(tier_size=1, n_tiers=2, n_combos=2)\n"
        "i = np.array([0, 5, c.size - 1])\n"
        "v = c.point(i)\n"
        "assert (c.index(v) == i).all() and (v == c.point(i, reference=True)).all()\n"
        "y = np.random.default_rng(0).standard_normal((1, 24)) * 4\n"
        "a = c.nearest(y); b = c.nearest(y, reference=True)\n"
        "assert np.isclose(((y - a) ** 2).sum(), ((y - b) ** 2).sum())\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def test_golay_message_halves_give_every_codeword():
    """The decode's two 64-entry tables: word(m) = gen_lo[m & 63] ^ gen_hi[m >> 6] for all m."""
    from leechlib.trio import _tables

    t = _tables(256, 16, 512)
    m = np.arange(4096)
    assert np.array_equal(t["gen_lo"][m & 63] ^ t["gen_hi"][m >> 6], t["words"])


def _dist(y, v):
    return ((np.asarray(y, dtype=np.float64) - v) ** 2).sum(-1)


def test_codebook_is_pinned(cb):
    """Files written with the trio code must keep decoding identically."""
    pinned = {
        0: [0] * 24,
        1: [0] * 16 + [-4, -4] + [0] * 6,
        12345678901234: [2, 6, 2, 0, 0, 2, -2, 2, 0, -2, 0, -4, 0, -4, 2, 0, 0, 0, -4, -6, 0, 6, 2, -2],
        2**47 + 99: [1] * 16 + [-3, 1, -3, -3, -3, 1, -3, 1],
        2**48 - 1: [-1, 3, 3, -5, 3, -1, 3, -1, -1, 3, 3, -5, 3, -1, 3, -1, 7, -5, -1, -1, 3, 3, 3, 3],
    }
    idx = np.array(list(pinned), dtype=np.int64)
    assert cb.point(idx).tolist() == list(pinned.values())
    big = (np.arange(4096, dtype=np.int64) * 68719476731) % (2**48)
    digest = hashlib.sha256(cb.point(big).astype("<i8").tobytes()).hexdigest()
    assert digest == "0d612b5cedf8e0e476c942b5a8e27cc011749d4daccb8488bc4a40f785b1259d"


def test_nearest_matches_exhaustive_scan_at_several_scales(cb, rng):
    """The search against the exhaustive numpy scan (the oracle): Gaussian blocks at
    the fitted scale and around it, overloaded blocks (x3), a zero block."""
    s = np.sqrt(8) / 0.9675  # the fitted scale of N(0, 1) blocks, integer model
    y = np.concatenate([rng.standard_normal((6, 24)) * s * np.repeat([0.6, 1.0, 1.6], 2)[:, None],
                        rng.standard_normal((2, 24)) * 3 * s, np.zeros((1, 24))])
    fast = cb.nearest(y)
    ref = cb.nearest(y, reference=True)
    np.testing.assert_allclose(_dist(y, fast), _dist(y, ref), rtol=1e-12, atol=1e-9)
    same = np.all(fast == ref, axis=1)
    assert same.sum() >= len(y) - 1  # the same point unless an exact tie
    assert np.array_equal(fast[-1], np.zeros(24))


def test_nearest_on_near_ties(cb, rng):
    """Midpoints of two codewords of the same coset and tiers (adjacent rows of one
    octet), and points just off them: exact ties and near-ties."""
    i = rng.integers(0, cb.size, 3) & ~np.int64(255) | 7
    v, w = cb.point(i), cb.point(i + 1)
    mid = (v + w) / 2.0
    y = np.concatenate([mid, mid + 1e-9 * rng.standard_normal(mid.shape)])
    fast = cb.nearest(y)
    ref = cb.nearest(y, reference=True)
    np.testing.assert_allclose(_dist(y, fast), _dist(y, ref), rtol=1e-12, atol=1e-9)
    assert np.all(_dist(y, fast) <= np.minimum(_dist(y, np.r_[v, v]), _dist(y, np.r_[w, w])) + 1e-9)


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 4.0))
def test_nearest_is_exact_hypothesis(small, seed, scale):
    c, pts = small
    y = np.random.default_rng(seed).standard_normal((3, 24)) * 3.0 * scale
    got = c.nearest(y)
    d_all = ((y[:, None, :] - pts[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(_dist(y, got), d_all.min(1), rtol=1e-12, atol=1e-9)


def test_nearest_huge_values(small):
    c, pts = small
    y = np.zeros((2, 24))
    y[0, 3] = 1e6
    y[1] = np.linspace(-1e5, 1e5, 24)
    got = c.nearest(y)
    d_all = ((y[:, None, :] - pts[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(_dist(y, got), d_all.min(1), rtol=1e-12)
    with pytest.raises(ValueError, match="too large"):
        c.nearest(np.full((1, 24), 1e8))
    with pytest.raises(ValueError, match="y"):
        c.nearest(np.full((1, 24), np.nan))


def test_nearest_workers(cb, rng):
    y = rng.standard_normal((40, 24)) * (np.sqrt(8) / 0.9675)
    a = cb.nearest(y, workers=1)
    b = cb.nearest(y, workers=2)
    assert np.array_equal(a, b)
    q = TrioQuantizer(scale=1.0)
    assert np.array_equal(q.encode(y[:8], workers=2), q.encode(y[:8]))
