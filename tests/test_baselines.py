"""Baseline quantizers: scalar (uniform, Lloyd-Max) and the spherically shaped E8."""

import numpy as np
import pytest

from leechlib._kernels.bruteforce import nearest_kernel, nearest_reference
from leechlib.baselines import E8Quantizer, ScalarQuantizer, e8_ball, e8_nearest_point


def test_e8_ball_counts():
    b = e8_ball(10)
    counts = np.bincount(np.rint((b**2).sum(axis=1)).astype(int))
    assert counts[[0, 2, 4, 6, 8, 10]].tolist() == [1, 240, 2160, 6720, 17520, 30240]
    assert len({r.tobytes() for r in b}) == len(b)


def test_e8_nearest_point_is_nearest(rng):
    cb = e8_ball(6)
    z = rng.standard_normal((800, 8)) * 0.45
    p = e8_nearest_point(z)
    assert np.all(np.abs(p * 2 - np.rint(p * 2)) == 0)
    near = (p**2).sum(axis=1) <= 2  # nearest point well inside the enumerated ball
    d = ((z[near, None, :] - cb[None]) ** 2).sum(-1).min(axis=1)
    np.testing.assert_allclose(((z[near] - p[near]) ** 2).sum(axis=1), d, rtol=0, atol=1e-12)
    assert near.mean() > 0.5


def test_nearest_kernel_matches_reference(rng):
    cb = e8_ball(6)
    x = rng.standard_normal((300, 8)) * 1.5
    x[:20] = cb[rng.integers(len(cb), size=20)]  # exact hits
    x[20:40] = (cb[:20] + cb[20:40]) / 2  # ties between two codewords
    out = np.empty(len(x), dtype=np.int64)
    nearest_kernel(x, cb, out)
    assert np.array_equal(out, nearest_reference(x, cb))


def test_scalar_quantizers_gaussian(rng):
    x = rng.standard_normal(100_000)
    uni = ScalarQuantizer(2, "uniform").fit(x)
    lm = ScalarQuantizer(2, "lloyd-max").fit(x)
    e_u = np.mean((uni.decode(uni.encode(x)) - x) ** 2)
    e_l = np.mean((lm.decode(lm.encode(x)) - x) ** 2)
    # Max (1960): 0.1188 (uniform), 0.1175 (Lloyd-Max) for a unit Gaussian at 2 bits
    assert abs(e_u - 0.1188) < 0.003 and abs(e_l - 0.1175) < 0.003
    assert e_l <= e_u + 1e-9


def test_e8_quantizer_rate_and_gaussian_mse(rng):
    q = E8Quantizer()
    assert q.size == 56881 and abs(q.bits_per_dim - np.log2(56881) / 8) < 1e-12
    q.fit(rng.standard_normal((1500, 8)), max_points=1500, iters=8)
    y = rng.standard_normal((3000, 8))
    mse = np.mean((q.decode(q.encode(y)) - y) ** 2)
    assert 0.085 < mse < 0.105


def test_bad_input():
    with pytest.raises(ValueError, match="kind"):
        ScalarQuantizer(2, "magic")
    with pytest.raises(ValueError, match="bits"):
        ScalarQuantizer(0)
    q = ScalarQuantizer(2).fit(np.arange(10.0))
    with pytest.raises(ValueError, match="codes out of range"):
        q.decode(np.array([4]))
    with pytest.raises(ValueError, match="NaN"):
        q.fit(np.array([np.nan]))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 8\)"):
        e8_nearest_point(np.zeros(7))
