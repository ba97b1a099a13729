"""torch_ext.LeechVQ: exact search, index maps, gradients, precision, compile, errors."""

import math

import numpy as np
import pytest
import torch

from torch_ext import LeechVQ


@pytest.fixture(scope="module")
def minvecs():
    from leechlib import LeechLattice

    return torch.from_numpy(LeechLattice().minimal_vectors(coords="int").astype(np.float64))


def _eval(vq):
    return vq.eval()


# ---------------------------------------------------------------------------
# codebooks and shell numbering
# ---------------------------------------------------------------------------


def test_shell_numbering_follows_leechlib():
    from leechlib import shell_count

    assert LeechVQ(24, codebook="minimal").codebook_size == 196560
    assert LeechVQ(24, codebook=4).codebook_size == 196560
    assert LeechVQ(24, codebook=6).codebook_size == shell_count(6) == 16773120
    assert LeechVQ(24, codebook=8).codebook_size == 398034000
    assert LeechVQ(24, codebook="ball").codebook_size == 196561
    assert LeechVQ(24, codebook="ball", max_norm=6).codebook_size == 1 + 196560 + 16773120
    assert LeechVQ(24, codebook=6).bits == pytest.approx(math.log2(16773120))
    assert LeechVQ(24, gain="block", gain_levels=4).codebook_size == 4 * 196560


def test_minimal_index_maps_match_leechlib_order(minvecs):
    from torch_ext.ops import minimal as _minimal

    idx = torch.arange(196560)
    assert torch.equal(_minimal.unrank(idx), minvecs)
    assert torch.equal(_minimal.rank(minvecs), idx)
    # non-members: a zeroed coordinate, a doubled vector, an odd sign pattern on an octad
    bad = minvecs[[5, 2000, 150000]].clone()
    bad[0, bad[0].nonzero()[0]] = 0
    bad[1] *= 2
    bad[2, 0] = -bad[2, 0]
    odd = minvecs[1104].clone()
    odd[odd.nonzero()[0]] *= -1
    assert (_minimal.rank(torch.cat([bad, odd[None]])) == -1).all()


# ---------------------------------------------------------------------------
# exact search against brute force
# ---------------------------------------------------------------------------


def test_minimal_search_is_exact_against_brute_force(minvecs):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 24, generator=g, dtype=torch.float64)
    x[:50] *= torch.rand(50, 1, generator=g, dtype=torch.float64) * 1e3  # any scale
    vq = _eval(LeechVQ(24, gain=None).double())
    _, idx, _ = vq(x)
    ip = x @ minvecs.t()
    best = ip.max(dim=1)
    assert torch.equal(idx[:, 0], best.indices)
    got = ip.gather(1, idx)[:, 0]
    assert torch.allclose(got, best.values, rtol=0, atol=1e-9 * best.values.abs().max())


def test_ball_search_is_exact_against_brute_force(minvecs):
    """Ball of norm <= 4 = origin + minimal vectors, scaled: nearest point by brute force."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64) * 0.7
    vq = _eval(LeechVQ(24, codebook="ball", gain=None, scale=1.5).double())
    q, idx, _ = vq(x)
    pts = torch.cat([torch.zeros(1, 24, dtype=torch.float64), minvecs / math.sqrt(8)]) * 1.5
    d = torch.cdist(x, pts) ** 2
    brute = d.min(dim=1)
    got = ((x - q) ** 2).sum(-1)
    assert torch.allclose(got, brute.values, atol=1e-9)
    # the ball's order puts the origin first, then the shell in ShellCodebook order
    assert int((idx[:, 0] == 0).sum()) == int((brute.indices == 0).sum())


@pytest.mark.slow
def test_shell_search_is_exact_against_brute_force():
    """Norm-6 shell: the largest inner product over all 16 773 120 vectors (streamed)."""
    from leechlib import LeechLattice

    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 24, generator=g, dtype=torch.float64)
    vq = _eval(LeechVQ(24, codebook=6, gain=None, scale=1.0).double())
    q, idx, _ = vq(x)
    best = np.full(len(x), -np.inf)
    xn = x.numpy()
    for chunk in LeechLattice().shell(6, coords="int", chunk_size=1 << 20):
        best = np.maximum(best, (xn @ chunk.T.astype(np.float64)).max(axis=1))
    got = (xn * q.numpy()).sum(axis=1) * math.sqrt(48)  # q = unit direction
    np.testing.assert_allclose(got, best, rtol=1e-12)


# ---------------------------------------------------------------------------
# indices <-> codes, every codebook
# ---------------------------------------------------------------------------


def test_round_trip_every_minimal_index():
    vq = _eval(LeechVQ(24, scale=0.7))
    idx = torch.arange(196560)[:, None]
    codes = vq.indices_to_codes(idx, project_out=False)
    assert torch.equal(vq.codes_to_indices(codes), idx)


@pytest.mark.parametrize("kwargs", [
    dict(codebook=6),
    dict(codebook=8, gain=None, scale=2.0),
    dict(codebook=12),
    dict(codebook="ball"),
    dict(codebook="ball", max_norm=8, scale=0.5),
    dict(codebook="minimal", gain="block", gain_levels=3),
    dict(codebook=6, gain="block", gain_levels=5),
    dict(codebook="minimal", dim=30),
    dict(codebook=6, dim=50),
], ids=str)
def test_round_trip_indices_codes(kwargs):
    kwargs = dict(kwargs)
    dim = kwargs.pop("dim", 48)
    vq = LeechVQ(dim, **kwargs)
    g = torch.Generator().manual_seed(3)
    if vq.levels is not None:  # fit the levels on a batch first
        vq.train()
        vq(torch.randn(64, dim, generator=g))
    vq.eval()
    n = vq.codebook_size
    idx = torch.randint(0, n, (40, vq.num_blocks), generator=g)
    idx[0] = 0
    idx[1] = n - 1
    codes = vq.indices_to_codes(idx, project_out=False)
    assert codes.shape == (40, vq.codebook_dim)
    assert torch.equal(vq.codes_to_indices(codes), idx)
    # and the output of the call is exactly the decoded indices
    x = torch.randn(7, 3, dim, generator=g)
    q, i, _ = vq(x)
    assert i.dtype == torch.int64 and i.shape == (7, 3, vq.num_blocks)
    assert torch.equal(vq.indices_to_codes(i), q)


def test_round_trip_continuous_block_gains():
    vq = _eval(LeechVQ(48, codebook="minimal", gain="block"))
    x = torch.randn(20, 48)
    q, idx, _, gains = vq(x, return_gains=True)
    assert torch.equal(vq.indices_to_codes(idx, gains=gains), q)
    assert torch.equal(vq.codes_to_indices(q), idx)
    assert (gains > 0).all()
    # the gain is the projection of the block on its direction: the residual is orthogonal
    r = (x - q).reshape(20, 2, 24)
    assert ((r * q.reshape(20, 2, 24)).sum(-1).abs() < 1e-4).all()


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


def test_straight_through_gradient_is_identity():
    vq = LeechVQ(48, gain="block", commitment_weight=0.0)
    x = torch.randn(5, 48, requires_grad=True)
    q, _, _ = vq(x)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_learned_gain_and_projections_get_gradients():
    vq = LeechVQ(30)
    x = torch.randn(8, 30, requires_grad=True)
    q, _, aux = vq(x)
    (q.square().sum() + aux).backward()
    assert x.grad.abs().sum() > 0
    assert vq.scale.grad.abs().sum() > 0
    assert vq.project_in.weight.grad.abs().sum() > 0


def test_ball_learned_scale_gets_the_lsq_gradient():
    vq = LeechVQ(24, codebook="ball", commitment_weight=0.0)
    x = torch.randn(16, 24, dtype=torch.float64)
    vq = vq.double()
    q, _, _ = vq(x)
    q.sum().backward()
    # d q / d s = p - x / s with p the unit-coordinate codeword (= q / s)
    s = vq.scale.detach()
    expect = (q.detach() / s - x / s).sum()
    assert torch.allclose(vq.scale.grad.sum(), expect)


def test_rotation_trick_gradient():
    """The gradient is w -> lambda R^T w with R the rotation taking x/|x| to q/|q|."""
    vq = LeechVQ(24, gain="block", rotation_trick=True, commitment_weight=0.0).double()
    x = torch.randn(1, 24, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 24, dtype=torch.float64)
    q, _, _ = vq(x)
    (q * w).sum().backward()
    xv, qv = x.detach()[0], q.detach()[0]
    xh, qh = xv / xv.norm(), qv / qv.norm()
    r = (xh + qh) / (xh + qh).norm()
    R = torch.eye(24, dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, xh)
    assert torch.allclose(R @ xh, qh, atol=1e-12)
    lam = qv.norm() / xv.norm()
    assert torch.allclose(x.grad[0], lam * R.t() @ w[0], atol=1e-12)
    ste = LeechVQ(24, gain="block", commitment_weight=0.0).double()
    x2 = x.detach().clone().requires_grad_(True)
    (ste(x2)[0] * w).sum().backward()
    assert not torch.allclose(x2.grad, x.grad)


def test_commitment_loss():
    vq = LeechVQ(24, gain=None, scale=1.0, commitment_weight=2.0)
    x = torch.randn(10, 24)
    q, _, aux = vq(x)
    xh = x / x.norm(dim=-1, keepdim=True)
    assert torch.allclose(aux, 2.0 * ((xh - q) ** 2).mean())
    assert float(LeechVQ(24, commitment_weight=0.0)(x)[2]) == 0.0


# ---------------------------------------------------------------------------
# precision, compile, custom ops
# ---------------------------------------------------------------------------


def test_autocast_runs_the_core_in_float32():
    vq = _eval(LeechVQ(48))
    x = torch.randn(6, 48).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, idx, aux = vq(x)
    assert q.dtype == torch.bfloat16 and idx.dtype == torch.int64
    assert aux.dtype == torch.float32
    _, idx32, _ = vq(x.float())
    assert torch.equal(idx, idx32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # with projections
        q2, _, _ = _eval(LeechVQ(30))(torch.randn(4, 30))
    assert q2.dtype == torch.float32 and torch.isfinite(q2).all()


@pytest.mark.parametrize("codebook", ["minimal", 6, "ball"])
def test_torch_compile(codebook):
    torch._dynamo.reset()
    vq = LeechVQ(48, codebook=codebook)
    x = torch.randn(5, 48)
    vq.eval()
    ref = vq(x)
    compiled = torch.compile(vq, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    vq.train()
    xg = x.clone().requires_grad_(True)
    q, _, aux = compiled(xg)
    (q.sum() + aux).backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_custom_ops_opcheck():
    x = torch.randn(5, 24, dtype=torch.float64)
    torch.library.opcheck(torch.ops.leech.codebook_search.default, (x, "shell", 6))
    torch.library.opcheck(torch.ops.leech.codebook_search.default, (x, "ball", 4))
    idx = torch.tensor([0, 5, 16773119])
    torch.library.opcheck(torch.ops.leech.codebook_unrank.default, (idx, "shell", 6))
    pts = torch.ops.leech.codebook_unrank(idx, "shell", 6)
    torch.library.opcheck(torch.ops.leech.codebook_rank.default, (pts, "shell", 6))
    assert torch.equal(torch.ops.leech.codebook_rank(pts, "shell", 6), idx)


@pytest.mark.parametrize("codebook", ["minimal", 6])
def test_torch_thread_count_is_kept(codebook):
    """leechlib's workers context must not change torch's OpenMP thread count."""
    torch.set_num_threads(1)
    vq = LeechVQ(24, codebook=codebook)
    vq(torch.randn(4, 24))
    vq.indices_to_codes(torch.zeros(1, 1, dtype=torch.int64))
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("codebook", ["minimal", 6])
def test_zero_block(codebook):
    vq = _eval(LeechVQ(24, codebook=codebook, gain="block"))
    q, idx, _, g = vq(torch.zeros(2, 24), return_gains=True)
    assert torch.equal(idx, torch.zeros(2, 1, dtype=torch.int64))
    assert torch.equal(q, torch.zeros(2, 24)) and torch.equal(g, torch.zeros(2, 1))
    assert torch.equal(vq.codes_to_indices(q), idx)


# ---------------------------------------------------------------------------
# statistics and gain levels
# ---------------------------------------------------------------------------


def test_usage_stats():
    vq = LeechVQ(24, usage_decay=0.5)
    s = vq.usage_stats(torch.tensor([[0], [0], [7], [7]]))
    assert s["distinct"] == 2 and s["perplexity"] == pytest.approx(2.0)
    assert s["usage"] == pytest.approx(2 / 196560)
    with pytest.raises(RuntimeError):
        vq.usage_stats()
    vq.train()
    _, idx, _ = vq(torch.randn(32, 24))
    s = vq.usage_stats()
    assert s["distinct"] == len(torch.unique(idx))
    assert s["ema_usage"] == pytest.approx(s["distinct"] / 196560)
    assert "ema_perplexity" not in LeechVQ(24, codebook=6).usage_stats(idx)
    vq.eval()
    before = vq.usage_ema.clone()
    vq(torch.randn(8, 24))
    assert torch.equal(vq.usage_ema, before)


def test_gain_levels_fit_in_training_only():
    vq = LeechVQ(24, gain="block", gain_levels=4)
    x = torch.randn(500, 24) * 3.0
    vq(x)
    lv = vq.levels.clone()
    assert torch.all(lv[1:] >= lv[:-1]) and lv.min() > 0 and 5.0 < float(lv.mean()) < 20.0
    vq.eval()
    vq(x)
    assert torch.equal(vq.levels, lv)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(codebook=5), ValueError, "codebook"),
    (dict(codebook=2), ValueError, "codebook"),
    (dict(codebook=58), ValueError, "codebook"),
    (dict(codebook="shell"), ValueError, "codebook"),
    (dict(codebook=4.0), TypeError, "codebook"),
    (dict(codebook=True), TypeError, "codebook"),
    (dict(codebook="ball", max_norm=5), ValueError, "max_norm"),
    (dict(codebook=6, max_norm=8), ValueError, "max_norm"),
    (dict(gain="norm"), ValueError, "gain"),
    (dict(codebook="ball", gain="block"), ValueError, "gain"),
    (dict(gain_levels=4), ValueError, "gain_levels"),
    (dict(gain="block", gain_levels=0), ValueError, "gain_levels"),
    (dict(scale=0.0), ValueError, "scale"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(codebook_dim=30), ValueError, "codebook_dim"),
    (dict(commitment_weight=-1.0), ValueError, "commitment_weight"),
    (dict(rotation_trick=1), TypeError, "rotation_trick"),
    (dict(codebook=8, track_usage=True), ValueError, "track_usage"),
    (dict(usage_decay=1.0), ValueError, "usage_decay"),
], ids=str)
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        LeechVQ(48, **kwargs)
    with pytest.raises(ValueError, match="dim"):
        LeechVQ(0)


def test_bad_input():
    vq = LeechVQ(48)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 48\)"):
        vq(torch.randn(3, 24))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        vq(torch.ones(3, 48, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        vq(np.zeros((3, 48)))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(3, 48)
        x[1, 30] = bad
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            vq(x)
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            LeechVQ(48, codebook=6)(x)
    with pytest.raises(TypeError, match="return_gains"):
        vq(torch.randn(3, 48), return_gains=1)


def test_bad_indices_and_codes():
    vq = LeechVQ(48)
    with pytest.raises(TypeError, match="indices must be an int64"):
        vq.indices_to_codes(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="indices must be an int64"):
        vq.indices_to_codes(torch.zeros(3, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="indices"):
        vq.indices_to_codes([[0, 1]])
    with pytest.raises(ValueError, match=r"indices must have shape \(\.\.\., 2\)"):
        vq.indices_to_codes(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"indices out of range \[0, 196560\): got 196560"):
        vq.indices_to_codes(torch.tensor([[0, 196560]]))
    with pytest.raises(ValueError, match="indices out of range.*got -2"):
        vq.indices_to_codes(torch.tensor([[-2, 0]]))
    with pytest.raises(ValueError, match="gains"):
        vq.indices_to_codes(torch.zeros(1, 2, dtype=torch.int64), gains=torch.ones(1, 2))
    with pytest.raises(ValueError, match="gains is required"):
        LeechVQ(48, gain="block").indices_to_codes(torch.zeros(1, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="codes are not codewords"):
        vq.codes_to_indices(torch.randn(2, 48))
    with pytest.raises(ValueError, match=r"codes must have shape \(\.\.\., 48\)"):
        vq.codes_to_indices(torch.randn(2, 24))
    with pytest.raises(TypeError, match="codes must be a floating-point"):
        vq.codes_to_indices(torch.zeros(2, 48, dtype=torch.int64))
    codes = vq.indices_to_codes(torch.zeros(1, 2, dtype=torch.int64), project_out=False)
    codes[0, 0] = float("nan")
    with pytest.raises(ValueError, match="codes contains NaN"):
        vq.codes_to_indices(codes)
    with pytest.raises(ValueError, match="codes are not codewords"):
        LeechVQ(24, codebook=6).codes_to_indices(torch.randn(1, 24))


# ---------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("codebook", ["minimal", 6, "ball"])
def test_cuda_matches_cpu(codebook):
    vq = _eval(LeechVQ(48, codebook=codebook))
    x = torch.randn(300, 48, dtype=torch.float64)
    q, idx, _ = vq.double()(x)
    vqc = vq.to("cuda")
    qc, idxc, _ = vqc(x.cuda())
    assert idxc.device.type == "cuda"
    assert torch.equal(idxc.cpu(), idx)
    assert torch.allclose(qc.cpu(), q)
    assert torch.equal(vqc.indices_to_codes(idxc).cpu(), qc.cpu())
    assert torch.equal(vqc.codes_to_indices(vqc.indices_to_codes(idxc, project_out=False)), idxc)


# ---------------------------------------------------------------------------
# extreme inputs (issue #24, item 11)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"codebook": 6}, {"codebook": "ball"},
                                    {"gain": "block"}, {"gain": "block", "gain_levels": 4},
                                    {"commitment_weight": 0.25}])
def test_empty_batch(kwargs):
    """An empty batch: empty outputs of the right shapes, an aux loss of 0 (not NaN),
    and in training no error from the gain levels (torch.quantile refuses empty
    input) and no change of state."""
    vq = LeechVQ(30, **kwargs)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    q, idx, loss, g = vq(torch.zeros(0, 5, 30), return_gains=True)
    assert q.shape == (0, 5, 30) and idx.shape == (0, 5, 2) and g.shape == (0, 5, 2)
    assert idx.dtype == torch.int64 and loss.shape == () and float(loss.detach()) == 0.0
    for k, v in vq.state_dict().items():
        assert torch.equal(v, state[k]), k
    q.sum().backward()  # the graph is intact


def test_gain_levels_in_half_precision_train():
    """torch.quantile refuses half precision; the levels' first fit does not use it."""
    vq = LeechVQ(24, gain="block", gain_levels=4).bfloat16()
    vq(torch.randn(64, 24).bfloat16())
    assert bool(vq.levels_ready) and bool(torch.isfinite(vq.levels).all())
    assert bool((vq.levels[1:] >= vq.levels[:-1]).all())


def test_gain_levels_stay_finite_at_huge_gains():
    """float64 gains of 1e200 cannot be float32 levels: refused, state untouched; a
    float64 module fits them without overflow (sums of the bucket means scaled)."""
    torch.manual_seed(0)
    vq = LeechVQ(24, gain="block", gain_levels=4)
    vq(torch.randn(64, 24))
    before = vq.levels.clone()
    with pytest.raises(ValueError, match="x has blocks whose gains overflow"):
        vq(torch.randn(64, 24, dtype=torch.float64) * 1e200)
    assert torch.equal(vq.levels, before)
    vq = LeechVQ(24, gain="block", gain_levels=4).double()
    for s in (1.0, 1e306, 1e-300):
        vq(torch.randn(1000, 24, dtype=torch.float64) * s)
        assert bool(torch.isfinite(vq.levels).all()), s
    # gains of 1e306 from the start: the first fit and its Lloyd step are finite too
    vq = LeechVQ(24, gain="block", gain_levels=4).double()
    vq(torch.randn(1000, 24, dtype=torch.float64) * 1e306)
    assert bool(torch.isfinite(vq.levels).all()) and float(vq.levels.min()) > 1e306


@pytest.mark.parametrize("codebook", ["minimal", 6])
def test_shell_direction_survives_huge_and_tiny_scales(codebook):
    """The search of a spherical codebook depends on the direction only, also where
    ||x||^2 overflows (1e160) or underflows (1e-170) in float64."""
    vq = _eval(LeechVQ(24, codebook=codebook, gain=None).double())
    x = torch.randn(16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, ref, _ = vq(x)
    assert len(torch.unique(ref)) > 8
    for s in (1e160, 1e300, 1e-170, 1e-300):
        assert torch.equal(vq(x * s)[1], ref), s


@pytest.mark.parametrize("rotation_trick", [False, True])
@pytest.mark.parametrize("size", [0.0, 1e-30, 1e-8])
def test_learned_gain_gradient_is_bounded_for_tiny_blocks(rotation_trick, size):
    """Normalising a block by max(||block||, 1e-4): the gradient with respect to a tiny
    (or all-zero) block is at most scale / 1e-4 per unit of output gradient, with
    straight-through and with the rotation trick (whose rescaling stays <= 1)."""
    vq = LeechVQ(24, rotation_trick=rotation_trick)
    x = torch.full((3, 24), size)
    x[1, ::2] = -size
    x.requires_grad_()
    q, _, _ = vq(x)
    up = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    (q * up).sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    bound = float(vq.scale.detach()) / 1e-4 * up.norm(dim=-1)
    assert bool((x.grad.norm(dim=-1) <= bound * (1 + 1e-5)).all())
    assert bool(torch.isfinite(vq.scale.grad).all())


@pytest.mark.parametrize("kwargs", [{}, {"codebook": 6}, {"codebook": "ball"},
                                    {"gain": "block", "gain_levels": 4}])
def test_meta_input_gives_meta_outputs(kwargs):
    """Shape inference: meta input, meta outputs of the right shapes and dtypes."""
    vq = LeechVQ(30, **kwargs)
    q, idx, loss, g = vq(torch.empty(7, 3, 30, device="meta"), return_gains=True)
    assert all(t.device.type == "meta" for t in (q, idx, loss, g))
    assert q.shape == (7, 3, 30) and q.dtype == torch.float32
    assert idx.shape == (7, 3, 2) and idx.dtype == torch.int64
    assert loss.shape == () and g.shape == (7, 3, 2)
    q64 = vq(torch.empty(2, 30, device="meta", dtype=torch.float64))[0]
    assert q64.dtype == torch.float64 and q64.shape == (2, 30)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_ball_scale_must_be_positive_and_finite(bad):
    vq = LeechVQ(24, codebook="ball")
    codes = vq.indices_to_codes(torch.ones(2, 1, dtype=torch.int64), project_out=False)
    with torch.no_grad():
        vq.scale.fill_(bad)
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        vq(torch.randn(3, 24))
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        vq.codes_to_indices(codes)
