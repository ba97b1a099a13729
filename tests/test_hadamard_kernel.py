"""The native randomized Hadamard transform of rows against the dense numpy reference."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib._kernels.hadamard import hadamard_rows_ref
from leechlib.kernels import hadamard_rows


def _factors(p, m, rng, dtype):
    signs = np.where(rng.random(p * m) < 0.5, -1.0, 1.0).astype(dtype)
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    return signs, np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=dtype)


@settings(deadline=None, max_examples=25)
@given(k=st.integers(0, 7), m=st.sampled_from([1, 3, 5, 7]), N=st.integers(1, 9), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]), inverse=st.booleans())
def test_kernel_matches_the_dense_reference(k, m, N, seed, dtype, inverse):
    rng = np.random.default_rng(seed)
    p = 1 << k
    signs, q = _factors(p, m, rng, dtype)
    x = rng.standard_normal((N, p * m)).astype(dtype)
    want = hadamard_rows_ref(x, signs.astype(np.float64), q.astype(np.float64), p, inverse)
    y = x.copy()
    hadamard_rows(y, signs, q, inverse=inverse)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    hadamard_rows(y, signs, q, inverse=not inverse)  # orthogonal: the other one undoes it
    np.testing.assert_allclose(y, x, rtol=tol, atol=tol)


def test_huge_and_zero_rows():
    rng = np.random.default_rng(0)
    signs, q = _factors(8, 3, rng, np.float64)
    x = np.zeros((2, 24))
    x[1] = 1e300 * rng.standard_normal(24) / 10
    want = hadamard_rows_ref(x, signs, q, 8, False)
    hadamard_rows(x, signs, q)
    np.testing.assert_allclose(x, want, rtol=1e-12)
    assert not x[0].any()


def test_bad_input():
    signs, q = np.ones(24), np.eye(3)
    x = np.zeros((2, 24))
    for args, kw, exc, match in [
        ((x.astype(np.int64), signs, q), {}, TypeError, "x must be a numpy array of float32"),
        ((x, signs.astype(np.float32), q), {}, TypeError, "signs must have x's dtype"),
        ((x[:, ::2], signs[:12], q), {}, ValueError, "x must be C-contiguous"),
        ((np.zeros((2, 21)), np.ones(21), q), {}, ValueError, "p \\* m with p a power of two"),
        ((x, np.ones(23), q), {}, ValueError, "signs of length 24"),
        ((x, signs, np.eye(3)[:2]), {}, ValueError, "q \\(m, m\\)"),
        ((x, signs, q), {"inverse": 1}, TypeError, "inverse must be a bool"),
    ]:
        with pytest.raises(exc, match=match):
            hadamard_rows(*args, **kw)
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        hadamard_rows(ro, signs, q)


def test_runs_as_python_without_jit():
    code = ("import numpy as np\nfrom leechlib.kernels import hadamard_rows\n"
            "x = np.array([[1.0, 0, 0, 0, 0, 0]]); s = np.ones(6); q = np.eye(3)\n"
            "hadamard_rows(x, s, q)\nassert np.allclose(x, [[2**-0.5, 0, 0, 2**-0.5, 0, 0]]), x\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
