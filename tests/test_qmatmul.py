"""Products with quantized weights from their packed codes: kernels against numpy references."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib._kernels import qmatmul
from leechlib._kernels.qmatmul import read_codes_ref, table_weight_ref, trio_weight_ref
from leechlib.kernels import packed_matmul, packed_weight
from leechlib.trio import TrioCodebook


def _pack(codes: np.ndarray, width: int) -> np.ndarray:
    """Codes (R, n) -> uint8 rows, LSB first (as torch_ext.quantize packs them)."""
    R, n = codes.shape
    bits = ((codes[:, :, None] >> np.arange(width)) & 1).astype(np.uint8).reshape(R, n * width)
    return np.packbits(bits, axis=1, bitorder="little")


def _case(rng, R, nb, width, groups):
    codes = rng.integers(0, 1 << width, size=(R, nb), dtype=np.int64) if width < 63 else None
    scales = rng.uniform(0.5, 2.0, size=(R, groups)).astype(np.float32)
    group = np.sort(rng.integers(0, groups, size=nb)).astype(np.int64)
    group[0] = 0
    return codes, scales, group


@pytest.mark.parametrize("width, d", [(1, 1), (2, 1), (3, 1), (5, 2), (16, 8)])
def test_table_kernels_match_the_reference(width, d):
    rng = np.random.default_rng(width)
    codes, scales, group = _case(rng, 37, 11, width, 3)
    packed = _pack(codes, width)
    assert np.array_equal(read_codes_ref(packed, 11, width), codes)
    table = rng.standard_normal((1 << width, d)).astype(np.float32)
    W = table_weight_ref(packed, width, table, scales, group)
    got = packed_weight(packed, scales, group, codebook="table", table=table, width=width, dtype=np.float64)
    assert np.array_equal(got, W)
    for B in (1, 3, 5):  # the byte-table path (scalar codes, small batches) and the decode path
        x = rng.standard_normal((B, 11 * d)).astype(np.float32)
        y = packed_matmul(x, packed, scales, group, codebook="table", table=table, width=width)
        np.testing.assert_allclose(y, x.astype(np.float64) @ W.T, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("aligned", [True, False])
def test_byte_table_path(width, aligned):
    """Scalar codes through one lookup per byte: the byte table equals its reference,
    and the product equals the decoded weight's, with scale groups whole within the
    bytes (aligned) or straddling them (the decode path), a ragged last byte, huge
    and zero entries of x."""
    from leechlib.kernels import _byte_groups

    rng = np.random.default_rng(width)
    m = 8 // width
    nb = 6 * m + (m - 1 if m > 1 else 0)
    codes, scales, group = _case(rng, 23, nb, width, 3)
    if aligned:
        group = np.minimum(np.arange(nb) // (2 * m), 2).astype(np.int64)
    packed = _pack(codes, width)
    table = rng.standard_normal((1 << width, 1)).astype(np.float32)
    assert (_byte_groups(group, width) is not None) == (aligned or m == 1)
    x = rng.standard_normal((2, nb)).astype(np.float32)
    x[0, :3] = [1e20, 0.0, -1e20]
    xp = np.zeros((2, m * -(-nb // m)), dtype=np.float32)
    xp[:, :nb] = x
    lut = np.empty((2, xp.shape[1] // m, 256), dtype=np.float32)
    qmatmul.byte_lut(xp, table, width, lut)
    bound = qmatmul.byte_lut_ref(np.abs(xp), np.abs(table), width)  # float32 rounding scales with it
    assert np.all(np.abs(lut - qmatmul.byte_lut_ref(xp, table, width)) <= 1e-6 * bound + 1e-30)
    W = table_weight_ref(packed, width, table, scales, group)
    kw = dict(codebook="table", table=table, width=width)
    assert np.array_equal(packed_weight(packed, scales, group, dtype=np.float64, **kw), W)
    assert np.array_equal(packed_weight(packed, scales, group, **kw), W.astype(np.float32))  # one rounding
    x[0, :3] = [3.0, 0.0, -2.0]
    for B in (1, 2):
        y = packed_matmul(x[:B].copy(), packed, scales, group, codebook="table", table=table, width=width)
        np.testing.assert_allclose(y, x[:B].astype(np.float64) @ W.T, rtol=2e-5, atol=2e-5)


def _trio_codes(rng, shape):
    return (rng.integers(0, 1 << 24, size=shape, dtype=np.int64) << 24) | rng.integers(0, 1 << 24, size=shape)


@settings(deadline=None, max_examples=15)
@given(R=st.integers(1, 40), nb=st.integers(1, 6), B=st.integers(1, 17), seed=st.integers(0, 2**31))
def test_trio_kernels_match_the_reference(R, nb, B, seed):
    rng = np.random.default_rng(seed)
    codes = _trio_codes(rng, (R, nb))
    codes[0, 0] = 0
    codes[-1, -1] = (1 << 48) - 1  # the first and the last codeword
    _, scales, group = _case(rng, R, nb, 1, 2)
    packed = _pack(codes, 48)
    assert np.array_equal(read_codes_ref(packed, nb, 48), codes)
    cb = TrioCodebook()
    W = trio_weight_ref(packed, scales, group, cb.point)
    assert np.array_equal(packed_weight(packed, scales, group, codebook="trio", dtype=np.float64), W)
    x = rng.standard_normal((B, 24 * nb)).astype(np.float32)
    y = packed_matmul(x, packed, scales, group, codebook="trio")
    np.testing.assert_allclose(y, x.astype(np.float64) @ W.T, rtol=1e-4, atol=1e-3)


def test_signed_octets_match_the_reference_and_the_decode():
    """The table of signed octets equals its numpy reference, and the batch-1 product
    through it (extreme codes included) equals the product with the decoded weight."""
    from leechlib.kernels import _trio_octet_maps

    rng = np.random.default_rng(3)
    prm, sgn = _trio_octet_maps()
    x = rng.standard_normal((2, 48)).astype(np.float32)
    x[0, :8] = [0.0, -0.0, 1e30, -1e30, 1.0, -1.0, 0.5, 2.0]  # extreme and signed-zero entries
    xs = np.empty((2, 6, 256, 8), dtype=np.float32)
    qmatmul.trio_signed_octets(x, prm, sgn, xs)
    np.testing.assert_array_equal(xs, qmatmul.trio_signed_octets_ref(x, prm, sgn))
    cb = TrioCodebook()
    # the product through the octet table equals the plain decode, B = 1
    R, nb = 9, 5
    codes = _trio_codes(rng, (R, nb))
    codes[0, :2] = 0, (1 << 48) - 1
    _, scales, group = _case(rng, R, nb, 1, 2)
    packed = _pack(codes, 48)
    W = trio_weight_ref(packed, scales, group, cb.point)
    x1 = rng.standard_normal((1, 24 * nb)).astype(np.float32)
    np.testing.assert_allclose(packed_matmul(x1, packed, scales, group, codebook="trio"),
                               x1.astype(np.float64) @ W.T, rtol=1e-4, atol=1e-3)


def test_octet_classes_by_popcount_match_the_class_table():
    """The batch-1 kernel computes an octet's class from the popcount of its pattern
    byte; it must be the class table's, for every (eps, even-weight byte, class bit)."""
    T = TrioCodebook().tables
    for eps in (0, 1):
        for p in range(256):
            if bin(p).count("1") % 2:
                continue
            for j in range(3):
                word = p << (8 * j)
                e = (int(qmatmul.octet_class_bytes(word, eps)) >> (8 * j)) & 255
                for pi in (0, 1):
                    assert e + pi == T["cls_of"][eps, p, pi], (eps, p, pi, j)


def test_batch_one_product_over_several_tiles():
    """More rows than a tile of the batch-1 kernel (a ragged last tile), two scale
    columns: the product equals the decoded weight's."""
    rng = np.random.default_rng(7)
    R, nb = qmatmul.OCTET_TILE + 37, 3
    codes = _trio_codes(rng, (R, nb))
    _, scales, group = _case(rng, R, nb, 1, 2)
    packed = _pack(codes, 48)
    W = trio_weight_ref(packed, scales, group, TrioCodebook().point)
    x = rng.standard_normal((1, 24 * nb)).astype(np.float32)
    np.testing.assert_allclose(packed_matmul(x, packed, scales, group, codebook="trio"),
                               x.astype(np.float64) @ W.T, rtol=1e-4, atol=1e-3)


def test_empty_and_bad_input():
    rng = np.random.default_rng(0)
    codes, scales, group = _case(rng, 3, 2, 2, 1)
    packed = _pack(codes, 2)
    table = np.zeros((4, 1), dtype=np.float32)
    kw = dict(codebook="table", table=table, width=2)
    assert packed_matmul(np.zeros((0, 2), dtype=np.float32), packed, scales, group, **kw).shape == (0, 3)
    bad = [
        (dict(x=np.zeros((1, 2))), TypeError, "x must be a numpy array of float32"),
        (dict(x=np.zeros((1, 3), dtype=np.float32)), ValueError, r"x must be C-contiguous of shape \(B, 2\)"),
        (dict(packed=packed.astype(np.int64)), TypeError, "packed must be a numpy array of uint8"),
        (dict(packed=packed[:, :0]), ValueError, "packed rows hold 0 bits"),
        (dict(scales=scales.astype(np.float64)), TypeError, "scales must be"),
        (dict(scales=scales[:2]), ValueError, "scales must have one row per row"),
        (dict(group=group + 5), ValueError, "group must index"),
        (dict(table=np.zeros((3, 1), dtype=np.float32)), ValueError, r"table must be C-contiguous of shape"),
        (dict(codebook="e8"), ValueError, "codebook must be 'table' or 'trio'"),
        (dict(width=1.5), TypeError, "width must be an int"),
    ]
    for change, exc, match in bad:
        args = dict(x=np.zeros((1, 2), dtype=np.float32), packed=packed, scales=scales, group=group, **kw)
        args.update(change)
        with pytest.raises(exc, match=match):
            packed_matmul(args.pop("x"), args.pop("packed"), args.pop("scales"), args.pop("group"), **args)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        packed_weight(packed, scales, group, dtype=np.int32, **kw)


def test_kernels_run_as_python_without_jit():
    code = (
        "import numpy as np\n"
        "from leechlib.kernels import packed_matmul, packed_weight\n"
        "p = np.array([[0xE4, 0x01, 0, 0, 0, 0]], dtype=np.uint8)\n"
        "s = np.ones((1, 1), dtype=np.float32); g = np.zeros(1, dtype=np.int64)\n"
        "w = packed_weight(p, s, g, codebook='trio', dtype=np.float64)\n"
        "y = packed_matmul(np.ones((1, 24), dtype=np.float32), p, s, g, codebook='trio')\n"
        "assert abs(float(y[0, 0]) - w.sum()) < 1e-4, (y, w.sum())\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def test_slp_kernels_compile_vectorised_and_restore_numba_config():
    """jit(slp=True) compiles with LLVM's SLP vectorizer (vector instructions appear where
    the default compile has scalar ones), gives the same results, and leaves Numba's
    own setting as it was."""
    import platform
    import re

    import numba

    from leechlib._jit import jit

    def dot8s(a, t, out):
        for j in range(out.shape[0]):
            x = a[8 * j: 8 * j + 8]
            w = t[j]
            f = np.float32
            out[j] = (((x[0] * f(w[0]) + x[1] * f(w[1])) + (x[2] * f(w[2]) + x[3] * f(w[3])))
                      + ((x[4] * f(w[4]) + x[5] * f(w[5])) + (x[6] * f(w[6]) + x[7] * f(w[7]))))

    before = numba.core.config.SLP_VECTORIZE
    plain, vec = jit(dot8s, cache=False), jit(dot8s, slp=True, cache=False)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(80).astype(np.float32)
    t = rng.integers(-128, 128, size=(10, 8)).astype(np.int8)
    o1, o2 = np.zeros(10, np.float32), np.zeros(10, np.float32)
    plain(a, t, o1)
    vec(a, t, o2)
    assert np.array_equal(o1, o2)
    assert numba.core.config.SLP_VECTORIZE == before
    if platform.machine().lower() in ("x86_64", "amd64"):  # packed single-precision SSE/AVX ops
        packed_ops = [len(re.findall(r"\bv?(?:mul|add)ps\b", "\n".join(f.inspect_asm().values())))
                      for f in (plain, vec)]
        assert packed_ops[0] == 0 < packed_ops[1], packed_ops
