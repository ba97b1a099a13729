"""Exact Leech decoding: kernels against brute force, lattice properties, NSM, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from leechlib._kernels import reference as ref
from leechlib.decode import (
    LeechQuantizer,
    nearest_minimal_vector,
    nearest_point,
    quantize,
)
from leechlib.lattice import LeechLattice

S8 = np.sqrt(8.0)
LAT = LeechLattice()
MINVEC = LAT.minimal_vectors(coords="int")  # (196560, 24) int8
HYP = settings(deadline=None, max_examples=40)


def in_lattice_int(z):
    return np.asarray(LAT.contains(np.asarray(z, dtype=np.float64), coords="int"))


def random_lattice_vectors(rng, n, terms=4, coef=3):
    """Small integer combinations of minimal vectors (integer model), int64."""
    idx = rng.integers(0, MINVEC.shape[0], size=(n, terms))
    c = rng.integers(-coef, coef + 1, size=(n, terms, 1))
    return (MINVEC[idx].astype(np.int64) * c).sum(axis=1)


def check_against_reference(y, pts, dist, *, rtol=1e-9):
    """``pts``/``dist``: our integer-frame answer for float64 inputs ``y``."""
    rp, rd, gap = ref.leech_nearest_ref(y)
    assert in_lattice_int(pts).all()
    ours = ((y - pts) ** 2).sum(axis=1)
    scale = np.maximum(rd, 1.0)
    np.testing.assert_array_less(np.abs(ours - rd), rtol * scale + 1e-300)
    np.testing.assert_array_less(np.abs(dist - ours), 1e-9 * scale)
    clear = gap > 1e-9 * scale
    np.testing.assert_array_equal(pts[clear], rp[clear])
    return clear


# ---------------------------------------------------------------- against brute force
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sigma", [0.1, 1.0, 10.0, 1e6])
def test_kernel_matches_bruteforce_random(dtype, sigma):
    rng = np.random.default_rng(int(sigma * 7) % 1000 + (dtype == np.float32))
    x = (sigma * S8 * rng.standard_normal((80, 24))).astype(dtype)
    pts, dist = nearest_point(x, coords="int", return_distance=True)
    assert pts.dtype == dtype and dist.dtype == dtype and pts.shape == x.shape
    y = x.astype(np.float64)
    p64, d64 = nearest_point(y, coords="int", return_distance=True)
    np.testing.assert_array_equal(pts.astype(np.float64), p64)  # float32 converted exactly
    clear = check_against_reference(y, p64, d64)
    assert clear.mean() > 0.9


@pytest.mark.parametrize("tiny", [1e-300, 1e-30, 1e-8])
def test_tiny_values(tiny):
    rng = np.random.default_rng(3)
    y = tiny * rng.standard_normal((20, 24))
    p, d = nearest_point(y, coords="int", return_distance=True)
    assert (p == 0).all()
    np.testing.assert_allclose(d, (y**2).sum(axis=1), rtol=1e-12)
    check_against_reference(y, p, d)


def test_unit_coords_consistent_with_int():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 24))
    pu, du = nearest_point(x, return_distance=True)
    pi_, di = nearest_point(x * S8, coords="int", return_distance=True)
    np.testing.assert_allclose(pu * S8, pi_, atol=1e-12)
    np.testing.assert_allclose(du * 8, di, rtol=1e-12)
    assert LAT.contains(pu).all()
    np.testing.assert_allclose(du, ((x - pu) ** 2).sum(axis=1), rtol=1e-12)


def test_integer_inputs_exact():
    rng = np.random.default_rng(5)
    z = rng.integers(-20, 21, size=(150, 24))
    p, d = nearest_point(z, coords="int", return_distance=True)
    assert p.dtype == np.float64
    rp, rd, gap = ref.leech_nearest_ref(z.astype(np.float64))
    np.testing.assert_array_equal(d, rd)  # integers: exact arithmetic
    np.testing.assert_array_equal(((z - p) ** 2).sum(axis=1), rd)
    assert in_lattice_int(p).all()
    np.testing.assert_array_equal(p[gap > 0], rp[gap > 0])


def test_near_deep_holes():
    rng = np.random.default_rng(6)
    n = 120
    h = np.zeros((n, 24))
    h[np.arange(n), rng.integers(0, 24, n)] = 4.0 * rng.choice([-1, 1], n)
    v = random_lattice_vectors(rng, n)
    for eps in (1e-7, 1e-3):
        y = h + v + eps * rng.standard_normal((n, 24))
        p, d = nearest_point(y, coords="int", return_distance=True)
        check_against_reference(y, p, d)
        np.testing.assert_allclose(d, 16.0, atol=0.2 if eps > 1e-5 else 1e-4)


def test_deep_hole_exact_and_deterministic():
    h = np.zeros(24)
    h[0] = 4.0
    nearest = [np.zeros(24), 8.0 * np.eye(24)[0]]
    for j in range(1, 24):
        for s in (4.0, -4.0):
            q = np.zeros(24)
            q[0], q[j] = 4.0, s
            nearest.append(q)
    nearest = np.array(nearest)
    assert len(nearest) == 48 and in_lattice_int(nearest).all()
    p, d = nearest_point(h, coords="int", return_distance=True)
    assert float(d) == 16.0
    assert (np.abs(nearest - p).sum(axis=1) == 0).any()
    for workers in (None, 1, 2, -1):
        np.testing.assert_array_equal(nearest_point(h, coords="int", workers=workers), p)
    batch = nearest_point(np.tile(h, (300, 1)), coords="int", workers=-1)
    assert (batch == p).all()
    pu = nearest_point(h / S8)
    np.testing.assert_allclose(pu * S8, p, atol=1e-12)


def test_voronoi_faces():
    rng = np.random.default_rng(7)
    n = 120
    base = random_lattice_vectors(rng, n)
    v = MINVEC[rng.integers(0, MINVEC.shape[0], n)].astype(np.int64)
    mid = base + v / 2.0  # equidistant (distance^2 8) from base and base + v
    p, d = nearest_point(mid, coords="int", return_distance=True)
    assert in_lattice_int(p).all()
    np.testing.assert_array_equal(d, 8.0)
    np.testing.assert_array_equal(nearest_point(mid, coords="int"), p)  # deterministic
    for eps in (1e-9, 1e-6):
        y = mid + eps * rng.standard_normal((n, 24))
        p, d = nearest_point(y, coords="int", return_distance=True)
        check_against_reference(y, p, d)


# ---------------------------------------------------------------------- properties
finite24 = arrays(
    np.float64, 24, elements=st.floats(-60.0, 60.0, allow_nan=False, allow_infinity=False)
)


@HYP
@given(finite24)
def test_property_membership_idempotence_error(x):
    p, d = nearest_point(x, return_distance=True)
    assert LAT.contains(p)
    assert d <= 2.0 + 1e-9  # covering radius sqrt(2)
    np.testing.assert_array_equal(nearest_point(p), p)
    pi_, di = nearest_point(x * S8, coords="int", return_distance=True)
    assert in_lattice_int(pi_)
    assert di <= 16.0 * (1 + 1e-12)
    np.testing.assert_array_equal(nearest_point(pi_, coords="int"), pi_)


@HYP
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.3, 1.0, 5.0]))
def test_property_translation_and_sign(seed, sigma):
    rng = np.random.default_rng(seed)
    y = sigma * S8 * rng.standard_normal((8, 24))
    v = random_lattice_vectors(rng, 8).astype(np.float64)
    p = nearest_point(y, coords="int")
    np.testing.assert_array_equal(nearest_point(y + v, coords="int") - v, p)
    np.testing.assert_array_equal(nearest_point(-y, coords="int"), -p)
    n8 = 8.0 * rng.integers(-1000, 1000, size=(8, 24))
    np.testing.assert_array_equal(nearest_point(y + n8, coords="int"), p + n8)


@HYP
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.999))
def test_property_packing_radius(seed, radius):
    rng = np.random.default_rng(seed)
    c = random_lattice_vectors(rng, 4) / S8
    u = rng.standard_normal((4, 24))
    u *= radius / np.linalg.norm(u, axis=1, keepdims=True)
    np.testing.assert_allclose(nearest_point(c + u), c, atol=1e-12)


@pytest.mark.slow
def test_normalized_second_moment():
    """G(Leech) by Monte Carlo, 2e6 points.

    sqrt(8) Z^24 is a sublattice of Lambda24 (8 Z^24 of the integer model), so the
    uniform distribution on the cube [0, sqrt 8)^24, a fundamental region of that
    sublattice, is mapped onto the uniform distribution on R^24 / Lambda24: every
    coset of Lambda24 meets the cube in the same number (8^12) of congruent pieces.
    The error x - Q(x) depends only on x modulo Lambda24, so its mean square is the
    second moment of the Voronoi cell.  V = 1 (unimodular), G = E||e||^2 / 24.
    """
    rng = np.random.default_rng(2024)
    total = 0.0
    n = 0
    for _ in range(4):
        x = rng.uniform(0.0, S8, size=(500_000, 24))
        _, d = nearest_point(x, workers=-1, return_distance=True)
        total += d.sum()
        n += d.size
    g = total / n / 24.0
    assert abs(g - 0.065753) < 3e-5, g


# ------------------------------------------------------------------- quantizer
def test_quantize_scale_and_coords():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((100, 24))
    for scale in (0.1, 0.5, 3.0):
        q, d = quantize(x, scale=scale, return_distance=True)
        np.testing.assert_allclose(q, nearest_point(x / scale) * scale, rtol=1e-12, atol=1e-12)
        assert LAT.contains(q / scale).all()
        np.testing.assert_allclose(d, ((x - q) ** 2).sum(axis=1), rtol=1e-9)
        assert d.max() <= 2.0 * scale**2 * (1 + 1e-12)
        qi = quantize(x, scale=scale, coords="int")
        assert in_lattice_int(np.rint(qi / scale)).all()
    q32 = quantize(x.astype(np.float32), scale=0.5)
    assert q32.dtype == np.float32


def test_leech_quantizer_roundtrip_and_dtypes():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, 24))
    qz = LeechQuantizer(scale=0.5)
    codes = qz.encode(x)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    assert in_lattice_int(codes).all()
    xh = qz.decode(codes)
    assert xh.dtype == np.float64
    np.testing.assert_allclose(xh, quantize(x, scale=0.5), atol=1e-12)
    assert np.array_equal(qz.decode(qz.encode(xh)), xh)
    big = LeechQuantizer(scale=0.001).encode(x)
    assert big.dtype == np.int16
    huge = LeechQuantizer(scale=1e-6).encode(x)
    assert huge.dtype == np.int32
    qi = LeechQuantizer(scale=2.0, coords="int")
    c = qi.encode(x * 10)
    np.testing.assert_allclose(qi.decode(c), quantize(x * 10, scale=2.0, coords="int"))
    assert repr(qi) == "LeechQuantizer(scale=2.0, coords='int')"
    assert qz.decode(codes[0]).shape == (24,)


def test_leech_quantizer_rejects_bad_codes():
    qz = LeechQuantizer()
    bad = np.zeros(24, dtype=np.int64)
    bad[0] = 2
    with pytest.raises(ValueError, match="codes"):
        qz.decode(bad)
    with pytest.raises(TypeError, match="codes"):
        qz.decode(np.zeros(24))
    with pytest.raises(ValueError, match="codes"):
        qz.decode(np.zeros(23, dtype=np.int8))
    with pytest.raises(ValueError, match="codes"):
        qz.decode(np.zeros((0, 24), dtype=np.int8))
    with pytest.raises(ValueError, match="scale"):
        LeechQuantizer(scale=-1.0)
    with pytest.raises(ValueError, match="coords"):
        LeechQuantizer(coords="float")


# -------------------------------------------------------------- minimal vectors
def check_minvec(x):
    v, idx = nearest_minimal_vector(x, coords="int", return_index=True)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(MINVEC[idx].astype(np.float64), v)
    ridx, rip, gap = ref.nearest_minvec_ref(x)
    ip = (v * x).sum(axis=1)
    scale = np.maximum(np.abs(x).sum(axis=1), 1e-300)
    np.testing.assert_array_less(np.abs(ip - rip), 1e-12 * scale * 4 + 1e-300)
    clear = gap > 1e-9 * scale
    np.testing.assert_array_equal(idx[clear], ridx[clear])
    return ip, rip


def test_minimal_vector_random():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((150, 24))
    x[:30] = rng.standard_normal((30, 24)) ** 5  # spiky: shape 1
    x[30:60] = MINVEC[rng.integers(1104, 98256, 30)] + 0.3 * rng.standard_normal((30, 24))
    x[60:90] = MINVEC[rng.integers(98256, 196560, 30)] + 0.3 * rng.standard_normal((30, 24))
    check_minvec(x)


def test_minimal_vector_integer_ties_exact():
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, size=(150, 24)).astype(np.float64)
    ip, rip = check_minvec(x)
    np.testing.assert_array_equal(ip, rip)


def test_minimal_vector_units_zero_and_dtype():
    v, i = nearest_minimal_vector(np.zeros(24), return_index=True)
    assert int(i) == 0
    np.testing.assert_allclose(v * S8, MINVEC[0])
    x = np.random.default_rng(12).standard_normal((5, 3, 24)).astype(np.float32)
    v = nearest_minimal_vector(x)
    assert v.dtype == np.float32 and v.shape == x.shape
    np.testing.assert_allclose((v.astype(np.float64) ** 2).sum(-1), 4.0, rtol=1e-6)


# ------------------------------------------------------------- NUMBA_DISABLE_JIT
_SCRIPT = r"""
import json, sys
import numpy as np
from leechlib.decode import nearest_point, nearest_minimal_vector
from leechlib.golay import golay_decode_soft as _golay_decode_soft
x = np.array(json.loads(sys.stdin.read()))
p, d = nearest_point(x, coords="int", return_distance=True)
v, i = nearest_minimal_vector(x[:6], coords="int", return_index=True)
c = _golay_decode_soft(x[:8])
print(json.dumps([p.tolist(), d.tolist(), v.tolist(), i.tolist(), c.tolist()]))
"""


def test_disable_jit_agrees():
    rng = np.random.default_rng(13)
    x = 3 * rng.standard_normal((20, 24))
    x[0] = 0.0
    x[0, 5] = 4.0  # deep hole
    x[1] = MINVEC[5000] / 2.0  # Voronoi face
    x[2] = rng.integers(-3, 4, 24)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    p, d, v, i, c = json.loads(res.stdout)
    p0, d0 = nearest_point(x, coords="int", return_distance=True)
    v0, i0 = nearest_minimal_vector(x[:6], coords="int", return_index=True)
    from leechlib.golay import golay_decode_soft as _golay_decode_soft

    np.testing.assert_array_equal(np.array(p), p0)
    np.testing.assert_array_equal(np.array(d), d0)
    np.testing.assert_array_equal(np.array(v), v0)
    np.testing.assert_array_equal(np.array(i), i0)
    np.testing.assert_array_equal(np.array(c), _golay_decode_soft(x[:8]))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "func",
    [
        nearest_point,
        quantize,
        nearest_minimal_vector,
        lambda x, **k: LeechQuantizer().encode(x, **k),
    ],
)
def test_bad_inputs(func):
    good = np.zeros((2, 24))
    for bad, exc in [
        (np.full(24, np.nan), ValueError),
        (np.full((2, 24), np.inf), ValueError),
        (np.zeros(23), ValueError),
        (np.float64(1.0), ValueError),
        (np.zeros((0, 24)), ValueError),
        (np.array(["a"] * 24), TypeError),
        (np.zeros(24, dtype=complex), TypeError),
    ]:
        with pytest.raises(exc, match="x"):
            func(bad)
    if func is not nearest_minimal_vector:
        with pytest.raises(ValueError, match="x is too large"):
            func(np.full(24, 1e300))
    else:
        assert (func(np.full(24, 1e300)) != 0).any()
    with pytest.raises(TypeError, match="workers"):
        func(good, workers=1.5)
    with pytest.raises(ValueError, match="workers"):
        func(good, workers=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workers", [1, -1])
def test_one_bad_row_in_a_large_batch(dtype, workers):
    # the kernel checks every entry itself (one pass): a single bad entry deep in
    # the batch, in any chunk, must still give the right error
    x = np.random.default_rng(5).normal(size=(1000, 24)).astype(dtype)
    for row, value, msg in [
        (777, np.nan, "x contains NaN or inf"),
        (999, -np.inf, "x contains NaN or inf"),
        (130, 1e30, "x is too large"),
    ]:
        y = x.copy()
        y[row, 23] = value
        with pytest.raises(ValueError, match=msg):
            nearest_point(y, workers=workers)
        with pytest.raises(ValueError, match=msg):
            quantize(y, scale=0.5, workers=workers)
    # finite float32 input that overflows only after scaling
    with pytest.raises(ValueError, match="x is too large"):
        quantize(np.full((3, 24), 3e38, dtype=np.float32), scale=1e-3)


def test_kernel_column_patterns_match_golay_module():
    # _leech_one hard-codes the MOG column patterns: rows 1..3 form X_s (even) or
    # its complement Y_s; pi = 0 pairs t = 0 with X_s, pi = 1 pairs t = 0 with Y_s
    from leechlib.golay import column_pattern

    X = {0: 0b0000, 1: 0b1100, 2: 0b1010, 3: 0b0110}  # {}, {2,3}, {1,3}, {1,2}
    pat = column_pattern()
    for s_, xs in X.items():
        ys = xs ^ 0b1110
        assert pat[s_, 0, 0] == xs and pat[s_, 0, 1] == (ys | 1)
        assert pat[s_, 1, 0] == ys and pat[s_, 1, 1] == (xs | 1)


@pytest.mark.parametrize("func", [nearest_point, quantize, nearest_minimal_vector])
def test_bad_coords(func):
    with pytest.raises(ValueError, match="coords"):
        func(np.zeros(24), coords="integer")
    with pytest.raises(TypeError, match="coords"):
        func(np.zeros(24), coords=1)


@pytest.mark.parametrize("scale", [0.0, -1.0, np.inf, np.nan])
def test_bad_scale_value(scale):
    with pytest.raises(ValueError, match="scale"):
        quantize(np.zeros(24), scale=scale)


@pytest.mark.parametrize("scale", ["1", None, True, 1 + 1j])
def test_bad_scale_type(scale):
    with pytest.raises(TypeError, match="scale"):
        quantize(np.zeros(24), scale=scale)


def test_quantize_overflow_after_scaling():
    with pytest.raises(ValueError, match="x"):
        quantize(np.full(24, 1e10), scale=1e-300)


def test_readonly_and_noncontiguous_inputs():
    rng = np.random.default_rng(14)
    big = rng.standard_normal((40, 48))
    x = big[:, ::2]
    assert not x.flags.c_contiguous
    expect = nearest_point(np.ascontiguousarray(x))
    np.testing.assert_array_equal(nearest_point(x), expect)
    ro = np.ascontiguousarray(x)
    ro.flags.writeable = False
    np.testing.assert_array_equal(nearest_point(ro), expect)
    np.testing.assert_array_equal(nearest_point(x.tolist()), expect)
    ro_f = np.asfortranarray(x)
    np.testing.assert_array_equal(nearest_minimal_vector(ro_f), nearest_minimal_vector(ro))
    before = ro.copy()
    quantize(ro, scale=0.3)
    np.testing.assert_array_equal(ro, before)


def test_batch_shapes_and_workers():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((3, 5, 24))
    p = nearest_point(x)
    assert p.shape == x.shape
    np.testing.assert_array_equal(p.reshape(-1, 24), nearest_point(x.reshape(-1, 24)))
    np.testing.assert_array_equal(nearest_point(x, workers=-1), p)
    p1, d1 = nearest_point(x[0, 0], return_distance=True)
    assert p1.shape == (24,) and np.ndim(d1) == 0
    xi = rng.integers(-5, 5, size=(4, 24)).astype(np.int32)
    assert nearest_point(xi).dtype == np.float64
    assert nearest_point(xi.astype(np.float16)).dtype == np.float64


def test_kernel_factories_are_decorator_agnostic():
    # the CUDA kernels are the factories' functions under another jit; with the
    # identity decorator they are plain Python and must agree with the CPU kernels
    from leechlib._kernels import leech, minvec
    from leechlib._mog import kernel_tables

    t = kernel_tables()
    lk = leech.make_kernels(lambda f: f)
    mk = minvec.make_kernels(lambda f: f)
    assert lk.leech_one is not leech._leech_one and not hasattr(lk.leech_one, "py_func")
    y = 3.0 * np.random.default_rng(21).standard_normal((6, 24))
    y[0] = 0.0
    y[0, 3] = 4.0  # a deep hole: ties
    want_p, want_d = nearest_point(y, coords="int", return_distance=True)
    want_v, want_i = nearest_minimal_vector(y, coords="int", return_index=True)
    for k in range(len(y)):
        out = np.empty(24)
        fs, js = np.zeros(leech.SCRATCH_F), np.zeros(leech.SCRATCH_I, dtype=np.int64)
        d = lk.leech_one(y[k].copy(), out, t["pat"], t["hexa"], t["hoff_leech"], fs, js)
        np.testing.assert_array_equal(out, want_p[k])
        assert d == want_d[k]
        v = np.empty(24)
        scratch = [np.zeros(48), np.zeros(48, dtype=np.int64), np.zeros(48), np.zeros(24),
                   np.zeros(24), np.zeros(24, dtype=np.int64), np.zeros(24), np.zeros(16)]
        i = mk.minvec_one(y[k], t["pat"], t["hoff_golay"], t["octads"], t["info"], v, *scratch)
        assert i == want_i[k]
        np.testing.assert_array_equal(v, want_v[k])
