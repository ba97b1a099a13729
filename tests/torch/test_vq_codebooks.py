"""LeechVQ's bits=, shape-gain and E8 codebooks, masks, usage statistics, compile, and
ResidualLeechVQ."""

import math

import numpy as np
import pytest
import torch

from torch_ext import LeechVQ, ResidualLeechVQ

ALL = [dict(), dict(codebook=6), dict(codebook="ball", bits=2), dict(codebook="shape-gain"),
       dict(codebook="e8")]
ESTIMATORS = ["ste", "rotation", "noise", "soft"]


# ---------------------------------------------------------------------------
# bits=
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1.5, 2, 2.5])
def test_ball_bits_is_the_weight_quantizers_ball(bits):
    from leechlib.quantizers import BallQuantizer
    vq = LeechVQ(24, codebook="ball", bits=bits)
    q = BallQuantizer(bits)
    assert vq.cb.norm == q.max_norm and vq.codebook_size == q.size
    assert vq.bits == pytest.approx(q.bits)


def test_ball_bits_search_matches_ball_quantizer():
    from leechlib.quantizers import BallQuantizer
    vq = LeechVQ(48, codebook="ball", bits=2, scale=0.8).double().eval()
    x = torch.randn(40, 48, dtype=torch.float64)
    _, idx, _ = vq(x)
    ref = BallQuantizer(2, scale=0.8).encode(x.numpy().reshape(-1, 24)).reshape(40, 2)
    assert np.array_equal(idx.numpy(), ref)


@pytest.mark.parametrize("bits", [2, 2.5])
def test_shape_gain_matches_shape_gain_quantizer(bits):
    from leechlib.quantizers import ShapeGainQuantizer
    x = torch.randn(60, 48, dtype=torch.float64)
    q = ShapeGainQuantizer(bits).fit(x.numpy().reshape(-1, 24))
    vq = LeechVQ(48, codebook="shape-gain", bits=bits).double().eval()
    assert vq.cb.shells == q.shells and vq.gain_levels == q.gain_levels
    assert vq.codebook_size == q.size
    vq.levels.copy_(torch.from_numpy(q.gains))
    vq.levels_ready.fill_(True)
    out, idx, _ = vq(x)
    ref = q.pack(q.encode(x.numpy().reshape(-1, 24))).reshape(60, 2)
    assert np.array_equal(idx.numpy(), ref)
    np.testing.assert_allclose(out.numpy(), q.quantize(x.numpy().reshape(-1, 24)).reshape(60, 48),
                               rtol=1e-12, atol=1e-12)
    assert torch.equal(vq.indices_to_codes(idx), out)
    assert torch.equal(vq.codes_to_indices(vq.indices_to_codes(idx, project_out=False)), idx)


def test_shape_gain_union_of_shells_is_exact():
    # a union of two shells (the shape-gain codebook's general form): the direction of
    # largest <x, v> / ||v|| over both, indices offset by the first shell's size
    from leechlib import LeechLattice, shell_count
    from torch_ext.vq._codebooks import Codebook
    cb = Codebook("union", 6, shells=(4, 6))
    y = torch.randn(30, 24, dtype=torch.float64)
    p, idx = cb.search(y)
    mv = LeechLattice().minimal_vectors(coords="int").astype(np.float64)
    c4 = (y.numpy() @ mv.T).max(1) / math.sqrt(32)
    c = (y * p).sum(-1).numpy() / np.sqrt((p * p).sum(-1).numpy())
    assert (c >= c4 - 1e-12).all()
    assert torch.equal(cb.points(idx), p) and torch.equal(cb.indices(p), idx)
    assert int(idx.max()) < cb.size == shell_count(4) + shell_count(6)


def test_e8_indices_match_e8_quantizer_and_brute_force():
    from leechlib.baselines import E8Quantizer, e8_ball
    vq = LeechVQ(48, codebook="e8", max_norm=4, scale=0.75).double().eval()
    x = torch.randn(30, 48, dtype=torch.float64) * 1.5
    q, idx, _ = vq(x)
    S = len(e8_ball(4))
    assert vq.codebook_size == S**3 and vq.bits == pytest.approx(3 * math.log2(S))
    ref = E8Quantizer(4, scale=0.75).encode(x.numpy().reshape(-1, 8)).reshape(30, 2, 3)
    comb = (ref[..., 0].astype(np.int64) * S + ref[..., 1]) * S + ref[..., 2]
    assert np.array_equal(idx.numpy(), comb)
    pts = e8_ball(4) * 0.75
    d = ((x.numpy().reshape(-1, 1, 8) - pts[None]) ** 2).sum(-1)
    best = d.min(1)
    got = ((x.numpy().reshape(-1, 8) - q.detach().numpy().reshape(-1, 8)) ** 2).sum(-1)
    np.testing.assert_allclose(got, best, rtol=1e-12)
    assert torch.equal(vq.indices_to_codes(idx), q)
    assert torch.equal(vq.codes_to_indices(vq.indices_to_codes(idx, project_out=False)), idx)


@pytest.mark.parametrize("bits, norm", [(2, 10), (19 / 8, 16), (1.0, 2)])
def test_e8_bits(bits, norm):
    assert LeechVQ(24, codebook="e8", bits=bits).cb.norm == norm


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(codebook="ball", bits=2, max_norm=26), ValueError, ["max_norm", "bits"]),
    (dict(codebook="e8", bits=2, max_norm=10), ValueError, ["max_norm", "bits"]),
    (dict(codebook="ball", bits=3), ValueError, ["bits"]),
    (dict(codebook="ball", bits="2"), TypeError, ["bits"]),
    (dict(codebook="ball", bits=0.5), ValueError, ["bits"]),
    (dict(codebook="shape-gain", bits=2.6), ValueError, ["bits"]),
    (dict(codebook="e8", bits=2.5), ValueError, ["bits"]),
    (dict(codebook="minimal", bits=2), ValueError, ["bits"]),
    (dict(codebook=6, bits=2), ValueError, ["bits"]),
    (dict(codebook="shape-gain", max_norm=24), ValueError, ["max_norm"]),
    (dict(codebook="shape-gain", gain=None), ValueError, ["gain"]),
    (dict(codebook="shape-gain", gain_levels=4), ValueError, ["gain_levels"]),
    (dict(codebook="e8", max_norm=5), ValueError, ["max_norm"]),
    (dict(codebook="e8", max_norm=18), ValueError, ["max_norm"]),
    (dict(codebook="e8", gain="block"), ValueError, ["gain"]),
    (dict(codebook="lattice"), ValueError, ["codebook"]),
    # the estimators' arguments
    (dict(estimator="gumbel"), ValueError, ["estimator"]),
    (dict(estimator=1), ValueError, ["estimator"]),
    (dict(estimator="noise", rotation_trick=True), ValueError, ["rotation_trick", "estimator"]),
    (dict(estimator="soft", rotation_trick=True), ValueError, ["rotation_trick", "estimator"]),
    (dict(soft_k=1), ValueError, ["soft_k"]),
    (dict(soft_k=2.5), TypeError, ["soft_k"]),
    (dict(soft_temperature=0.0), ValueError, ["soft_temperature"]),
    (dict(soft_temperature=float("nan")), ValueError, ["soft_temperature"]),
    (dict(soft_temperature="1"), TypeError, ["soft_temperature"]),
])
def test_bad_codebook_and_estimator_arguments(kwargs, exc, words):
    with pytest.raises(exc) as e:
        LeechVQ(48, **kwargs)
    for w in words:
        assert w in str(e.value)


# ---------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kw", ALL)
def test_mask_keeps_input_and_gives_minus_one(kw):
    torch.manual_seed(0)
    vq = LeechVQ(48, commitment_weight=1.0, **kw).train()
    x = torch.randn(3, 7, 48)
    mask = torch.rand(3, 7) > 0.4
    mask[0, 0], mask[0, 1] = True, False
    x[~mask] = x[~mask] * 1e3  # masked: left out of the loss and the statistics
    q, idx, aux = vq(x, mask)
    assert torch.equal(q[~mask], x[~mask])
    assert (idx[~mask] == -1).all() and (idx[mask] >= 0).all()
    # the same blocks unmasked, alone (a fresh module: the same gain levels)
    ref = LeechVQ(48, commitment_weight=1.0, **kw).train()
    qr, ir, ar = ref(x[mask])
    assert torch.equal(idx[mask], ir)
    assert torch.allclose(q[mask], qr, atol=1e-5) and torch.allclose(aux, ar, rtol=1e-5)
    if vq.levels is not None:
        assert torch.equal(vq.levels, ref.levels)
    if vq.track_usage:
        assert torch.equal(vq.usage_ema, ref.usage_ema)
    vq.eval()
    codes = vq.indices_to_codes(idx)
    assert (codes[~mask] == 0).all()
    assert vq.usage_stats(idx)["distinct"] == vq.usage_stats(idx[mask])["distinct"]


def test_mask_gradient_is_identity_at_masked_positions():
    vq = LeechVQ(30)  # with projections
    x = torch.randn(4, 30, requires_grad=True)
    mask = torch.tensor([True, False, True, False])
    q, _, _ = vq(x, mask)
    q.sum().backward()
    assert torch.equal(x.grad[~mask], torch.ones(2, 30))


def test_bad_mask():
    vq = LeechVQ(48)
    x = torch.randn(4, 48)
    with pytest.raises(TypeError, match="mask"):
        vq(x, [True] * 4)
    with pytest.raises(TypeError, match="mask must be a bool"):
        vq(x, torch.ones(4))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        vq(x, torch.ones(4, 48, dtype=torch.bool))


def test_all_masked_batch_changes_nothing():
    vq = LeechVQ(24, codebook=6, gain="block", gain_levels=4, commitment_weight=1.0).train()
    lv = vq.levels.clone()
    x = torch.randn(5, 24)
    q, idx, aux = vq(x, torch.zeros(5, dtype=torch.bool))
    assert torch.equal(q, x) and (idx == -1).all() and float(aux) == 0.0
    assert torch.equal(vq.levels, lv) and not bool(vq.levels_ready)


# ---------------------------------------------------------------------------
# usage statistics
# ---------------------------------------------------------------------------


def test_usage_stats_dead_codes_tracked_and_untracked():
    vq = LeechVQ(48).train()
    _, idx, _ = vq(torch.randn(100, 48))
    s = vq.usage_stats()
    for k in ("distinct", "usage", "perplexity", "ema_perplexity", "ema_usage", "dead_codes",
              "dead_fraction", "max_min_ratio"):
        assert k in s
    used = int((vq.usage_ema > 0).sum())
    assert s["dead_codes"] == vq.codebook_size - used
    assert s["dead_fraction"] == pytest.approx(s["dead_codes"] / vq.codebook_size)
    assert s["max_min_ratio"] >= 1.0
    big = LeechVQ(48, codebook="ball", bits=2)
    assert not big.track_usage
    i = torch.tensor([[0, 1], [0, 5], [-1, -1]])
    s = big.usage_stats(i)
    assert s["distinct"] == 3 and s["dead_codes"] == big.codebook_size - 3
    assert s["max_min_ratio"] == 2.0 and "ema_usage" not in s
    assert LeechVQ(24).usage_stats(torch.full((2, 1), -1))["max_min_ratio"] == 0.0


# ---------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("kw", ALL + [dict(codebook="ball", bits=2, gain=None)])
def test_compile_fullgraph_every_codebook_and_estimator(kw, est):
    torch._dynamo.reset()
    torch.manual_seed(0)
    vq = LeechVQ(48, estimator=est, commitment_weight=0.5, **kw)
    ref = LeechVQ(48, estimator=est, commitment_weight=0.5, **kw)
    ref.load_state_dict(vq.state_dict())
    x = torch.randn(6, 48)
    mask = torch.tensor([True, True, False, True, True, False])
    compiled = torch.compile(vq, backend="eager", fullgraph=True)
    vq.train(), ref.train()
    torch.manual_seed(1)
    xg = x.clone().requires_grad_(True)
    q, idx, aux = compiled(xg, mask)
    torch.manual_seed(1)
    qr, ir, ar = ref(x, mask)
    assert torch.equal(idx, ir) and torch.allclose(q, qr, atol=1e-6) and torch.allclose(aux, ar)
    (q.sum() + aux).backward()
    assert torch.isfinite(xg.grad).all()
    if vq.levels is not None:
        assert torch.equal(vq.levels, ref.levels)
    vq.eval(), ref.eval()
    out, r = compiled(x), ref(x)
    assert torch.equal(out[0], r[0]) and torch.equal(out[1], r[1])


def test_compile_aot_eager_shape_gain_training():
    torch._dynamo.reset()
    vq = LeechVQ(48, codebook="shape-gain", estimator="soft").train()
    compiled = torch.compile(vq, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 48, requires_grad=True)
    q, idx, aux = compiled(x, torch.ones(8, dtype=torch.bool))
    q.sum().backward()
    assert torch.isfinite(x.grad).all() and bool(vq.levels_ready)


def test_compile_inductor_minimal():
    # the default backend, once (slower to compile)
    torch._dynamo.reset()
    vq = LeechVQ(48).eval()
    x = torch.randn(5, 48)
    out = torch.compile(vq, fullgraph=True)(x)
    ref = vq(x)
    assert torch.allclose(out[0], ref[0]) and torch.equal(out[1], ref[1])


# ---------------------------------------------------------------------------
# device unranking
# ---------------------------------------------------------------------------


def test_unranking_gives_shapes_off_the_cpu():
    # meta tensors: the unrank op's fake kernel and the E8 table gather give shapes only
    # (the CUDA branch of the op, the torch port, is tested by tests marked cuda)
    from torch_ext.vq._codebooks import Codebook
    for cb in (Codebook("ball", 26), Codebook("union", 24, shells=(24,)), Codebook("shell", 6),
               Codebook("e8", 10)):
        out = cb.points(torch.zeros(3, 2, dtype=torch.int64, device="meta"))
        assert out.shape == (3, 2, 24) and out.device.type == "meta"


def test_union_unrank_matches_the_torch_port():
    from torch_ext.ops.codebook import shell_union_points
    from torch_ext.vq._codebooks import Codebook
    cb = Codebook("union", 8, shells=(4, 8))
    idx = torch.tensor([0, 196559, 196560, cb.size - 1, 1234567])
    pts, _ = shell_union_points(idx, (4, 8))
    assert torch.equal(cb.points(idx), pts.to(torch.float64))


# ---------------------------------------------------------------------------
# ResidualLeechVQ
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(), dict(codebook="ball", bits=1.5), dict(codebook="e8"),
                                dict(codebook="shape-gain"),
                                dict(codebook=6, gain="block", gain_levels=4)])
def test_residual_round_trip_and_shapes(kw):
    torch.manual_seed(0)
    rvq = ResidualLeechVQ(48, num_quantizers=3, **kw)
    x = torch.randn(2, 5, 48, requires_grad=True)
    q, idx, aux = rvq(x)
    assert q.shape == x.shape and idx.shape == (2, 5, 2, 3) and aux.shape == ()
    q.sum().backward()
    assert torch.isfinite(x.grad).all()
    rvq.eval()
    q, idx, _ = rvq(x)
    assert torch.equal(rvq.indices_to_codes(idx), q)
    assert rvq.bits == pytest.approx(3 * rvq.layers[0].bits)
    # each stage lowers the error
    errs = []
    for n in (1, 2, 3):
        c = sum(rvq.layers[k].indices_to_codes(idx[..., k]) for k in range(n))
        errs.append(float(((c.detach() - x.detach()) ** 2).mean()))
    assert errs[0] > errs[1] > errs[2]


def test_residual_scales_decay_and_mask():
    rvq = ResidualLeechVQ(24, num_quantizers=3, scale_decay=0.25, codebook="ball")
    s = [float(layer.scale.detach()[0]) for layer in rvq.layers]
    assert s[1] == pytest.approx(s[0] * 0.25) and s[2] == pytest.approx(s[0] / 16)
    x = torch.randn(4, 24)
    mask = torch.tensor([True, False, True, True])
    q, idx, _ = rvq(x, mask)
    assert torch.equal(q[1], x[1]) and (idx[1] == -1).all() and (idx[mask] >= 0).all()
    rvq.eval()
    q, idx, _ = rvq(x, mask)
    assert (rvq.indices_to_codes(idx)[1] == 0).all()
    assert len(rvq.usage_stats(idx)) == 3


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(num_quantizers=0), ValueError, "num_quantizers"),
    (dict(num_quantizers=2.0), TypeError, "num_quantizers"),
    (dict(scale_decay=0.0), ValueError, "scale_decay"),
    (dict(scale_decay=1.5), ValueError, "scale_decay"),
    (dict(codebook=6, gain="block"), ValueError, "gain_levels"),
])
def test_residual_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ResidualLeechVQ(24, **kwargs)
    with pytest.raises(ValueError, match="indices"):
        ResidualLeechVQ(24).indices_to_codes(torch.zeros(3, 1, 3, dtype=torch.int64))


def test_residual_exports():
    import torch_ext
    import torch_ext.vq
    assert torch_ext.ResidualLeechVQ is torch_ext.vq.ResidualLeechVQ
    assert "ResidualLeechVQ" in torch_ext.__all__ and "ResidualLeechVQ" in torch_ext.vq.__all__


def test_residual_noise_stages_take_the_hard_residual():
    torch.manual_seed(0)
    rvq = ResidualLeechVQ(48, num_quantizers=3, codebook="ball", bits=1.5, estimator="noise")
    x = torch.randn(6, 48, requires_grad=True)
    q, idx, _ = rvq(x)
    q.sum().backward()
    assert torch.isfinite(x.grad).all()
    rvq.eval()
    _, ref, _ = rvq(x)
    assert torch.equal(idx, ref)


def test_compile_residual_fullgraph():
    torch._dynamo.reset()
    rvq = ResidualLeechVQ(48, num_quantizers=2, codebook="ball", bits=2, estimator="noise")
    compiled = torch.compile(rvq, backend="eager", fullgraph=True)
    x = torch.randn(4, 48)
    q, idx, _ = compiled(x, torch.tensor([True, False, True, True]))
    assert idx.shape == (4, 2, 2) and (idx[1] == -1).all()
    rvq.eval()
    out, ref = compiled(x), rvq(x)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.parametrize("kw", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_every_codebook(kw, dtype):
    vq = LeechVQ(48, **kw).train()
    x = torch.randn(6, 48).to(dtype).requires_grad_(True)
    mask = torch.tensor([True, True, False, True, True, True])
    q, idx, _ = vq(x, mask)
    assert q.dtype == dtype and torch.isfinite(q).all() and torch.equal(q[2], x[2])
    q.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    vq.eval()
    q, idx, _ = vq(x.detach())
    assert torch.equal(vq.indices_to_codes(idx).to(dtype), q)
