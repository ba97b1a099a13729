"""torch_ext.ops: exactness against brute force and leechlib, custom-op contracts, errors."""

import math

import numpy as np
import pytest
import torch

import leechlib
import torch_ext
from leechlib._kernels.reference import leech_nearest_ref, nearest_minvec_ref
from torch_ext import ops
from torch_ext.ops._decoder import leech_nearest_int, nearest_minvec_int

SQRT8 = math.sqrt(8.0)
_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def CUDA(fn):
    """Mark a test as needing CUDA (``cuda`` marker) and skip it without a GPU."""
    return pytest.mark.cuda(_NO_CUDA(fn))


def _leechlib_decoders():
    return leechlib.nearest_point, leechlib.nearest_minimal_vector


@pytest.fixture(params=["leechlib", "torch"])
def cpu_backend(request, monkeypatch):
    """Run a test with each CPU backend of the custom ops."""
    if request.param == "leechlib":
        monkeypatch.delenv("TORCH_EXT_CPU_BACKEND", raising=False)
        assert ops.cpu_backend() == "leechlib"
    else:
        monkeypatch.setenv("TORCH_EXT_CPU_BACKEND", "torch")
        assert ops.cpu_backend() == "torch"
    return request.param


def _hard_points(rng, leech, n):
    """Deep-hole-adjacent, Voronoi-face and large points (integer model)."""
    out = []
    mv = leech.minimal_vectors(coords="int").astype(np.float64)
    for k in range(n):
        a = leech.random_automorphism(rng=int(rng.integers(1 << 30)), length=2)
        lat = mv[rng.integers(len(mv))] * rng.integers(-3, 4)
        kind = k % 3
        if kind == 0:  # near the deep hole (4, 0^23), moved by an automorphism
            h = np.zeros(24)
            h[0] = 4.0
            p = (h + rng.normal(scale=1e-3, size=24)) @ a.T
        elif kind == 1:  # near the Voronoi face between 0 and a minimal vector
            p = mv[rng.integers(len(mv))] / 2 + rng.normal(scale=1e-4, size=24)
        else:  # near a norm-6 Voronoi-relevant midpoint: sum of two minimal vectors
            p = (mv[rng.integers(len(mv))] + mv[rng.integers(len(mv))]) / 2
            p = p + rng.normal(scale=1e-4, size=24)
        out.append(p + lat)
    return np.array(out)


def _check_against_reference(y, v):
    pts, dist, gap = leech_nearest_ref(y)
    d = ((y - v) ** 2).sum(1)
    np.testing.assert_allclose(d, dist, rtol=1e-12, atol=1e-9)
    unique = gap > 1e-7
    assert np.array_equal(v[unique], pts[unique])
    return int(unique.sum())


# ---------------------------------------------------------------------------
# pure-torch decoder (the CUDA path) against the brute force
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.7, 3.0, 40.0])
def test_torch_decoder_random_matches_brute_force(nrng, leech, sigma):
    y = nrng.normal(scale=sigma, size=(120, 24))
    v = leech_nearest_int(torch.from_numpy(y), chunk=64).numpy()
    assert leech.contains(v, coords="int").all()
    assert _check_against_reference(y, v) == 120


def test_torch_decoder_hard_points(nrng, leech):
    y = _hard_points(nrng, leech, 120)
    v = leech_nearest_int(torch.from_numpy(y)).numpy()
    assert leech.contains(v, coords="int").all()
    _check_against_reference(y, v)


def test_torch_decoder_exact_deep_hole_ties(leech):
    h = np.zeros((1, 24))
    h[0, 0] = 4.0
    v = leech_nearest_int(torch.from_numpy(h)).numpy()
    assert leech.contains(v, coords="int").all()
    assert ((h - v) ** 2).sum() == pytest.approx(16.0)  # covering radius^2 = 2 * 8


def test_torch_decoder_large_inputs(nrng, leech):
    base = nrng.integers(-(10**12), 10**12, size=(50, 24)).astype(np.float64) * 8.0
    y = base + nrng.normal(scale=2.0, size=(50, 24))
    v = leech_nearest_int(torch.from_numpy(y)).numpy()
    # translate back by the 8Z^24 part: the residual problem must match the reference
    r = y - base
    assert _check_against_reference(r, v - base) == 50


def test_torch_decoder_lattice_points_are_fixed(nrng, leech):
    mv = leech.minimal_vectors(coords="int").astype(np.float64)
    pts = mv[nrng.integers(len(mv), size=100)] + mv[nrng.integers(len(mv), size=100)]
    v = leech_nearest_int(torch.from_numpy(pts)).numpy()
    assert np.array_equal(v, pts)


def test_torch_decoder_chunking_is_invisible(nrng):
    y = torch.from_numpy(nrng.normal(scale=3.0, size=(70, 24)))
    assert torch.equal(leech_nearest_int(y, chunk=16), leech_nearest_int(y, chunk=1000))
    assert torch.equal(nearest_minvec_int(y, chunk=16), nearest_minvec_int(y, chunk=1000))


def test_torch_minvec_matches_brute_force(nrng, leech):
    x = np.concatenate(
        [
            nrng.normal(size=(150, 24)),
            nrng.normal(size=(50, 24)) ** 3,  # heavy tails: the (±4², 0²²) shape wins
            leech.minimal_vectors(coords="int")[nrng.integers(196560, size=50)]
            + nrng.normal(scale=0.1, size=(50, 24)),
        ]
    )
    idx = nearest_minvec_int(torch.from_numpy(x)).numpy()
    ref_idx, ip, gap = nearest_minvec_ref(x)
    vecs = leech.minimal_vectors(coords="int").astype(np.float64)
    np.testing.assert_allclose((x * vecs[idx]).sum(1), ip, rtol=1e-12, atol=1e-9)
    unique = gap > 1e-9
    assert unique.sum() > 200
    assert np.array_equal(idx[unique], ref_idx[unique])


def test_torch_minvec_exact_minimal_vectors(leech):
    mv = leech.minimal_vectors(coords="int")
    pick = np.r_[0:10, 1104:1114, 98256:98266, 196550:196560, 5000, 60000, 150000]
    idx = nearest_minvec_int(torch.from_numpy(mv[pick].astype(np.float64))).numpy()
    assert np.array_equal(idx, pick)


def test_torch_minvec_degenerate_inputs(leech):
    x = torch.zeros(3, 24, dtype=torch.float64)
    x[1, 0] = 1.0
    x[2] = 1.0
    idx = nearest_minvec_int(x)
    vecs = torch.from_numpy(leech.minimal_vectors(coords="int").astype(np.float64))
    ip = (x * vecs[idx]).sum(1)
    assert ip.tolist() == [0.0, 4.0, float((vecs @ torch.ones(24, dtype=torch.float64)).max())]


# ---------------------------------------------------------------------------
# the public ops, both CPU backends
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("coords", ["unit", "int"])
def test_nearest_point_op_matches_reference(cpu_backend, nrng, leech, dtype, coords):
    scale = 0.75
    x = torch.from_numpy(nrng.normal(scale=1.5, size=(2, 20, 24))).to(dtype)
    q = torch_ext.nearest_point(x, coords=coords, scale=scale)
    assert q.shape == x.shape and q.dtype == dtype
    factor = (SQRT8 if coords == "unit" else 1.0) / scale
    y = x.double().reshape(-1, 24).numpy() * factor
    pts, dist, gap = leech_nearest_ref(y)
    got = q.double().reshape(-1, 24).numpy() * factor
    np.testing.assert_allclose(got, pts, atol=1e-9 if dtype == torch.float64 else 1e-4)


def test_leechlib_and_torch_decoder_agree(nrng, leech):
    fn, mv = _leechlib_decoders()
    leechlib_quantize = leechlib.quantize
    y = np.concatenate([nrng.normal(scale=3.0, size=(500, 24)), _hard_points(nrng, leech, 60)])
    a = fn(y, coords="int")
    b = leech_nearest_int(torch.from_numpy(y)).numpy()
    da, db = ((y - a) ** 2).sum(1), ((y - b) ** 2).sum(1)
    np.testing.assert_allclose(da, db, rtol=1e-12, atol=1e-9)
    for coords, scale in (("unit", 1.0), ("int", 1.0), ("unit", 0.37), ("int", 3.0)):
        x = torch.from_numpy(nrng.normal(size=(200, 24)))
        q_leech = torch.from_numpy(
            fn(x.numpy(), coords=coords) if scale == 1.0
            else leechlib_quantize(x.numpy(), scale=scale, coords=coords)
        )
        assert torch.equal(ops.nearest_point_torch(x, scale=scale, coords=coords), q_leech)  # bitwise
    x = nrng.normal(size=(300, 24))
    va, ia = mv(x, coords="int", return_index=True)
    ib = nearest_minvec_int(torch.from_numpy(x)).numpy()
    assert np.array_equal(ia, ib)


def test_nearest_minimal_vector_op(cpu_backend, nrng, leech):
    x = torch.from_numpy(nrng.normal(size=(2, 40, 24))).float()
    v, idx = torch_ext.nearest_minimal_vector(x, return_index=True)
    assert v.shape == x.shape and idx.shape == (2, 40) and idx.dtype == torch.int64
    ref_idx, ip, gap = nearest_minvec_ref(x.double().reshape(-1, 24).numpy())
    unit = leech.minimal_vectors()
    assert np.array_equal(idx.reshape(-1).numpy(), ref_idx)
    np.testing.assert_allclose(v.reshape(-1, 24).numpy(), unit[ref_idx], atol=1e-6)
    vi = torch_ext.nearest_minimal_vector(x, coords="int")
    torch.testing.assert_close(vi, v * SQRT8, rtol=1e-5, atol=1e-5)


def test_noncontiguous_and_empty_inputs(cpu_backend):
    x = torch.randn(24, 10).T  # non-contiguous (10, 24)
    assert torch.equal(torch_ext.nearest_point(x), torch_ext.nearest_point(x.contiguous()))
    e = torch.zeros(0, 24)
    assert torch_ext.nearest_point(e).shape == (0, 24)
    v, i = torch_ext.nearest_minimal_vector(torch.zeros(3, 0, 24), return_index=True)
    assert v.shape == (3, 0, 24) and i.shape == (3, 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_decoded_in_float32(dtype):
    x = (torch.randn(20, 24) * 2).to(dtype)
    q = torch_ext.nearest_point(x)
    assert q.dtype == dtype
    assert torch.equal(q, torch_ext.nearest_point(x.float()).to(dtype))
    v = torch_ext.nearest_minimal_vector(x)
    assert v.dtype == dtype


def test_autocast_bf16_region():
    w = torch.randn(24, 24)
    x = torch.randn(8, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = x @ w
        assert h.dtype == torch.bfloat16
        q = torch_ext.quantize_ste(h, scale=0.5)
        v = torch_ext.nearest_minimal_vector(h)
    assert q.dtype == torch.bfloat16 and v.dtype == torch.bfloat16
    assert torch.isfinite(q.float()).all()


# ---------------------------------------------------------------------------
# autograd, opcheck, compile
# ---------------------------------------------------------------------------


def test_ste_gradient_is_identity():
    x = torch.randn(5, 24, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 24, dtype=torch.float64)
    y = torch_ext.quantize_ste(x, scale=0.3)
    (y * g).sum().backward()
    assert torch.equal(x.grad, g)
    torch.testing.assert_close(y, torch_ext.nearest_point(x.detach(), scale=0.3))


def test_nearest_point_and_minvec_gradients_are_zero():
    x = torch.randn(3, 24, requires_grad=True)
    (torch_ext.nearest_point(x).sum() + torch_ext.nearest_minimal_vector(x).sum()).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize(
    "op, args",
    [
        ("nearest_point", (torch.randn(4, 24, dtype=torch.float64), "unit", 1.0)),
        ("nearest_point", (torch.randn(2, 3, 24), "int", 2.5)),
        ("quantize_ste", (torch.randn(4, 24), "unit", 0.5)),
        ("nearest_minimal_vector", (torch.randn(2, 5, 24), "unit")),
    ],
)
def test_opcheck(cpu_backend, op, args):
    x = args[0].clone().requires_grad_(True)
    torch.library.opcheck(getattr(torch.ops.leech, op).default, (x,) + args[1:])


def test_torch_compile_traces_the_ops():
    def f(x):
        q = torch_ext.quantize_ste(x * 2.0, scale=0.5)
        v = torch_ext.nearest_minimal_vector(x)
        return (q * v).sum(-1)

    x = torch.randn(6, 24, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = cf(x)
    torch.testing.assert_close(out, f(x))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: torch_ext.nearest_point(np.zeros((2, 24))), TypeError, "x must be a torch.Tensor"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 24, dtype=torch.int64)), TypeError, "floating"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 23)), ValueError, "(..., 24)"),
        (lambda: torch_ext.nearest_point(torch.zeros(())), ValueError, "(..., 24)"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 24), coords="half"), ValueError, "coords"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 24), coords=1), TypeError, "coords"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 24), scale=0.0), ValueError, "scale"),
        (lambda: torch_ext.nearest_point(torch.zeros(2, 24), scale="1"), TypeError, "scale"),
        (lambda: torch_ext.quantize_ste(torch.zeros(2, 24), scale=float("nan")), ValueError, "scale"),
        (lambda: torch_ext.nearest_point(torch.full((2, 24), float("nan"))), ValueError, "NaN"),
        (lambda: torch_ext.nearest_point(torch.full((2, 24), float("inf"))), ValueError, "NaN or inf"),
        (lambda: torch_ext.nearest_point(torch.full((1, 24), 1e17, dtype=torch.float64)), ValueError, "too large"),
        (lambda: torch_ext.nearest_minimal_vector(torch.zeros(2, 24), return_index=1), TypeError, "return_index"),
        (lambda: torch_ext.nearest_minimal_vector(torch.full((2, 24), float("nan"))), ValueError, "NaN"),
    ],
)
def test_errors_name_the_argument(cpu_backend, call, exc, words):
    with pytest.raises(exc, match=__import__("re").escape(words)):
        call()


# ---------------------------------------------------------------------------
# signatures: leechlib's names and order, keyword-only after x; the old positional
# order still works for one release, with a DeprecationWarning
# ---------------------------------------------------------------------------


def _keyword_only(fn):
    import inspect

    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == "x" and params[0].kind is params[0].POSITIONAL_OR_KEYWORD
    return [(p.name, p.default) for p in params[1:] if p.kind is p.KEYWORD_ONLY], len(params) - 1


NUMPY_ONLY = ("workers", "return_distance")  # leechlib's arguments that torch has no use for


@pytest.mark.parametrize(
    "torch_fn, leechlib_fn",
    [
        (torch_ext.nearest_point, leechlib.quantize),
        (torch_ext.quantize_ste, leechlib.quantize),
        (torch_ext.nearest_minimal_vector, leechlib.nearest_minimal_vector),
        (ops.nearest_point_torch, leechlib.quantize),
    ],
)
def test_signatures_mirror_leechlib(torch_fn, leechlib_fn):
    got, n_after_x = _keyword_only(torch_fn)
    want, _ = _keyword_only(leechlib_fn)
    assert len(got) == n_after_x  # every argument after x is keyword-only
    assert got == [(n, d) for n, d in want if n not in NUMPY_ONLY]


def test_minimal_vector_twin_signature():
    got, n_after_x = _keyword_only(ops.nearest_minimal_vector_torch)
    assert got == [("coords", "unit")] and n_after_x == 1


@pytest.mark.parametrize(
    "old, new, keywords",
    [
        (lambda x: torch_ext.nearest_point(x, "int"),
         lambda x: torch_ext.nearest_point(x, coords="int"), "coords='int'"),
        (lambda x: torch_ext.nearest_point(x, "int", 2.5),
         lambda x: torch_ext.nearest_point(x, scale=2.5, coords="int"), "coords='int', scale=2.5"),
        (lambda x: torch_ext.quantize_ste(x, 0.5),
         lambda x: torch_ext.quantize_ste(x, scale=0.5), "scale=0.5"),
        (lambda x: torch_ext.quantize_ste(x, 3.0, "int"),
         lambda x: torch_ext.quantize_ste(x, scale=3.0, coords="int"), "scale=3.0, coords='int'"),
        (lambda x: torch_ext.nearest_minimal_vector(x, "int", True),
         lambda x: torch_ext.nearest_minimal_vector(x, coords="int", return_index=True),
         "coords='int', return_index=True"),
        (lambda x: ops.nearest_minimal_vector_torch(x, "int"),
         lambda x: ops.nearest_minimal_vector_torch(x, coords="int"), "coords='int'"),
    ],
)
def test_positional_arguments_after_x_are_deprecated(nrng, old, new, keywords):
    x = torch.from_numpy(nrng.normal(scale=2.0, size=(6, 24)))
    with pytest.warns(DeprecationWarning, match=__import__("re").escape(keywords)) as rec:
        got = old(x)
    assert rec[0].filename == __file__  # attributed to the caller
    want = new(x)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_keyword_calls_do_not_warn(recwarn):
    x = torch.randn(3, 24)
    torch_ext.nearest_point(x, scale=2.0, coords="int")
    torch_ext.quantize_ste(x, coords="unit", scale=0.5)
    torch_ext.nearest_minimal_vector(x, return_index=True, coords="int")
    ops.nearest_point_torch(x, scale=0.5)
    ops.nearest_minimal_vector_torch(x, coords="int")
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_positional_misuse_is_a_type_error():
    x = torch.randn(2, 24)
    with pytest.raises(TypeError, match="positional"):
        torch_ext.nearest_point(x, "unit", 1.0, 3)
    with pytest.raises(TypeError, match="multiple values for argument 'coords'"):
        torch_ext.nearest_point(x, "int", coords="unit")
    with pytest.raises(TypeError, match="positional"):
        ops.nearest_point_torch(x, 1.0)


def test_decode_torch_is_a_deprecated_alias(nrng):
    x = torch.from_numpy(nrng.normal(size=(5, 24)))
    with pytest.warns(DeprecationWarning, match="nearest_point_torch"):
        got = ops.decode_torch(x, "int", 3.0)
    assert torch.equal(got, ops.nearest_point_torch(x, scale=3.0, coords="int"))
    with pytest.warns(DeprecationWarning, match="nearest_point_torch"):
        assert torch.equal(ops.decode_torch(x), ops.nearest_point_torch(x))


# ---------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ---------------------------------------------------------------------------


@CUDA
def test_cuda_decoder_matches_cpu(nrng, leech):
    y = np.concatenate([nrng.normal(scale=3.0, size=(2000, 24)), _hard_points(nrng, leech, 90)])
    yc = torch.from_numpy(y).cuda()
    v = leech_nearest_int(yc).cpu().numpy()
    _check_against_reference(y, v)
    x = torch.randn(3, 100, 24, device="cuda")
    q = torch_ext.nearest_point(x)
    assert q.device.type == "cuda"
    torch.testing.assert_close(q.cpu(), torch_ext.nearest_point(x.cpu()))
    idx = nearest_minvec_int(yc[:500]).cpu().numpy()
    ref_idx, ip, gap = nearest_minvec_ref(y[:500])
    vecs = leech.minimal_vectors(coords="int").astype(np.float64)
    np.testing.assert_allclose((y[:500] * vecs[idx]).sum(1), ip, rtol=1e-12, atol=1e-9)


@CUDA
def test_cuda_opcheck_and_ste():
    x = torch.randn(4, 24, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.leech.quantize_ste.default, (x, "unit", 1.0))
    torch.library.opcheck(torch.ops.leech.nearest_minimal_vector.default, (x, "int"))
    y = torch_ext.quantize_ste(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_compiled_decoder_path_matches_eager(nrng):
    """The ``set_decoder_compile`` path; aot_eager keeps it quick here (the benchmark
    times inductor).  Only the nearest-point decoder: tracing costs seconds per graph."""
    x = torch.from_numpy(nrng.normal(scale=2.0, size=(37, 24)))
    want = ops.nearest_point_torch(x)
    ops.set_decoder_compile(True, backend="aot_eager")
    try:
        got = ops.nearest_point_torch(x)
    finally:
        ops.set_decoder_compile(False)
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="enabled"):
        ops.set_decoder_compile("yes")


def test_chunk_padding_to_powers_of_two(nrng):
    from torch_ext.ops import _decoder

    seen = []

    def fn(y):
        seen.append(y.shape[0])
        return _decoder._nearest_minvec_chunk(y), y.sum(1)

    x = torch.from_numpy(nrng.normal(size=(37, 24)))
    idx, sums = _decoder._chunked(fn, x, 16, pad=True)
    assert seen == [16, 16, 8]
    assert torch.equal(idx, nearest_minvec_int(x)) and torch.allclose(sums, x.sum(1))
    seen.clear()
    _decoder._chunked(fn, x[:3], 16, pad=True)
    assert seen == [4]


def test_float32_search_with_float64_fallback(nrng, leech):
    """The float32 search certifies its winner or hands the point to float64."""
    from torch_ext.ops._decoder import _leech_nearest_chunk32

    mv = leech.minimal_vectors(coords="int").astype(np.float64)
    octad = mv[1104 + 128 * np.r_[0:758:40, 758]]  # (±2^8): another Golay coset
    ties = torch.from_numpy(octad / 2)  # midpoints 0 <-> v: exact ties across cosets
    near = ties + torch.from_numpy(nrng.normal(scale=1e-9, size=ties.shape))
    _, unsure = _leech_nearest_chunk32(torch.cat([ties, near]))
    # 0 and v lie in the same (eps, pi, h) class (a tie the float64 rebuild settles)
    # exactly when the octad is two whole MOG columns (hexacode word 0, parity 0)
    cols = (octad != 0).reshape(20, 6, 4).all(-1).sum(-1) == 2
    assert np.array_equal(unsure[:20].numpy(), ~cols)
    y = torch.cat([ties, near, torch.from_numpy(_hard_points(nrng, leech, 60))])
    fast = leech_nearest_int(y)
    assert torch.equal(fast, leech_nearest_int(y, dp32=False))
    _check_against_reference(y.numpy(), fast.numpy())
    r = torch.from_numpy(nrng.normal(scale=2.0, size=(2000, 24)))
    assert _leech_nearest_chunk32(r)[1].sum() <= 5  # random points rarely need it (~1e-5)


# ---------------------------------------------------------------------------
# ties: where the arithmetic is exact, the pure-torch decoders (the CUDA path) and
# leechlib's Numba kernels (the CPU path) give bitwise the same answer


@pytest.mark.parametrize("dp32", [True, False])
def test_torch_decoder_breaks_exact_ties_like_leechlib(nrng, dp32):
    fn, _ = _leechlib_decoders()
    for lo, hi, div in [(-9, 10, 1), (-2, 3, 1), (-3, 4, 2), (-3, 4, 4)]:
        y = nrng.integers(lo, hi, size=(3000, 24)).astype(np.float64) / div
        want = fn(y, coords="int")
        got = leech_nearest_int(torch.from_numpy(y), dp32=dp32).numpy()
        assert np.array_equal(got, want), (lo, hi, div)
    # the 48 nearest points of a deep hole, translated by lattice vectors and 8Z^24
    h = np.zeros((200, 24))
    h[:, 0] = 4.0
    h += 8.0 * nrng.integers(-3, 4, size=h.shape)
    assert np.array_equal(leech_nearest_int(torch.from_numpy(h), dp32=dp32).numpy(),
                          fn(h, coords="int"))


def test_torch_minvec_breaks_exact_ties_like_leechlib(nrng):
    _, mv = _leechlib_decoders()
    for lo, hi in [(-2, 3), (-1, 2), (0, 2), (-5, 6)]:
        x = nrng.integers(lo, hi, size=(3000, 24)).astype(np.float64)
        x[(x == 0).all(1), 0] = 1.0
        _, want = mv(x, coords="int", return_index=True)
        got = nearest_minvec_int(torch.from_numpy(x), chunk=97).numpy()
        assert np.array_equal(got, want), (lo, hi)


@CUDA
def test_cuda_output_frame_is_true_division():
    # torch divides CUDA tensors by a Python scalar as a multiplication by its
    # reciprocal; the ops' frame change must round like numpy (leechlib) does
    from torch_ext.ops._backends import _true_div

    v = torch.randn(100_000, dtype=torch.float64) * 1e4
    got = _true_div(v.cuda(), SQRT8).cpu()
    assert torch.equal(got, torch.from_numpy(v.numpy() / SQRT8))


def test_decoder_tables_come_from_leechlib_and_are_cached_per_device():
    from leechlib.kernels import mog_tables
    from torch_ext.ops import _decoder

    tab = _decoder._tables("cpu")
    assert _decoder._tables(torch.device("cpu")) is tab  # one entry per device
    mog = mog_tables()
    assert np.array_equal(tab["hexa"].numpy(), mog["hexa"])
    assert np.array_equal(tab["cp"].numpy(), mog["column_pattern"])
    assert np.array_equal(tab["octads"].numpy(), mog["octads"])
    assert np.array_equal(tab["info"].numpy(), mog["information_set"])
    mv = _decoder.minimal_vectors_int("cpu")
    assert _decoder.minimal_vectors_int(torch.device("cpu")) is mv and tab["minvec"] is mv
    assert mv.shape == (196560, 24) and mv.dtype == torch.int8
    assert all(k == str(torch.device(k)) for k in _decoder._PER_DEVICE)  # normalised keys
