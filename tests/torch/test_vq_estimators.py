"""LeechVQ's gradient estimators: "ste", "rotation", "noise" (Voronoi-cell noise), "soft"."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_ext import LeechVQ
from torch_ext.vq._estimators import E8_G, LEECH_G, draw, voronoi_bank

CODEBOOKS = [dict(), dict(codebook=6), dict(codebook="ball", bits=2), dict(codebook="shape-gain"),
             dict(codebook="e8")]
ESTIMATORS = ["ste", "rotation", "noise", "soft"]


def _moment(bank: torch.Tensor):
    """Mean and standard error of the second moment per dimension of the rows."""
    e2 = (bank.double() ** 2).sum(-1) / 24.0
    return float(e2.mean()), float(e2.std()) / math.sqrt(e2.numel())


@pytest.mark.parametrize("lattice, G", [("leech", LEECH_G), ("e8", E8_G)])
def test_voronoi_bank_second_moment_is_G(lattice, G):
    # unit coordinates: both lattices have volume 1, so E||e||^2 / n = G * vol^(2/n) = G
    m, se = _moment(voronoi_bank(lattice))
    assert abs(m - G) < 4 * se + 1e-5, (m, se)


def test_voronoi_noise_decodes_to_zero():
    import leechlib
    from leechlib.baselines import e8_nearest_point
    e = voronoi_bank("leech")[:4096].double().numpy()
    assert not np.abs(leechlib.nearest_point(e, coords="unit")).any()
    e8 = voronoi_bank("e8")[:4096].double().numpy().reshape(-1, 8)
    assert not np.abs(e8_nearest_point(e8)).any()


def test_voronoi_bank_is_seeded_and_draw_has_shape():
    assert torch.equal(voronoi_bank("leech", 64, 3), voronoi_bank("leech", 64, 3))
    torch.manual_seed(0)
    d = draw(voronoi_bank("leech"), (5, 2), torch.float64)
    assert d.shape == (5, 2, 24) and d.dtype == torch.float64


@pytest.mark.parametrize("kw, G", [(dict(codebook="ball", bits=2, scale=0.7), LEECH_G),
                                   (dict(codebook="e8", scale=0.7), E8_G)])
def test_noise_estimator_adds_the_scaled_cell_noise(kw, G):
    torch.manual_seed(0)
    vq = LeechVQ(48, estimator="noise", **kw).train()
    x = torch.randn(4096, 48)
    q, idx, _ = vq(x)
    e = (q - x).detach().reshape(-1, 24)
    m, se = _moment(e)
    # second moment G * vol^(2/24) with vol = scale^24: G * scale^2, within sampling error
    assert abs(m - G * 0.49) < 4 * se + 1e-5, (m, G * 0.49)
    vq.eval()
    qe, ie, _ = vq(x)
    assert torch.equal(ie, idx) and torch.equal(vq.indices_to_codes(ie), qe)


def test_noise_estimator_gradients_reach_input_and_scale():
    vq = LeechVQ(48, codebook="ball", estimator="noise").train()
    x = torch.randn(32, 48, requires_grad=True)
    q, _, _ = vq(x)
    q.square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(vq.scale.grad).all()
    # value x + s e: the gradient is 2 q, straight to x
    assert torch.allclose(x.grad, 2 * q.detach())


@pytest.mark.parametrize("kw", [dict(), dict(codebook=6), dict(codebook="shape-gain")])
def test_noise_on_shells_matches_the_batch_error(kw):
    torch.manual_seed(1)
    vq = LeechVQ(24, estimator="noise", **kw).train()
    x = torch.randn(4096, 24)
    q, _, _ = vq(x)
    vq.eval()
    qh, _, _ = vq(x)
    if vq.gain_mode == "block":
        hard_err = float(((qh - x) ** 2).sum(-1).mean())
        noise_err = float(((q - x) ** 2).sum(-1).mean())
    else:  # the noise is added to the normalised block, times the gain
        s = float(vq.scale.detach()[0])
        xh = x / x.norm(dim=-1, keepdim=True)
        hard_err = float(((qh.detach() / s - xh) ** 2).sum(-1).mean())
        noise_err = float(((q.detach() / s - xh) ** 2).sum(-1).mean())
    assert abs(noise_err / hard_err - 1.0) < 0.1, (noise_err, hard_err)


@pytest.mark.parametrize("kw", CODEBOOKS)
def test_soft_value_is_the_hard_codeword_and_gradients_flow(kw):
    torch.manual_seed(0)
    vq = LeechVQ(48, estimator="soft", soft_k=4, **kw)
    x = torch.randn(16, 48)
    vq.eval()
    hard, hidx, _ = vq(x)
    vq.train()
    xg = x.clone().requires_grad_(True)
    q, idx, _ = vq(xg)
    K = vq.gain_levels or 1  # shape-gain: training moves the gain levels first
    assert torch.equal(idx // K, hidx // K)
    vq.eval()
    assert torch.allclose(q, vq.indices_to_codes(idx), atol=1e-5, rtol=0)
    q.square().sum().backward()
    assert xg.grad.shape == x.shape and torch.isfinite(xg.grad).all()
    assert xg.grad.abs().sum() > 0


def test_soft_gradient_is_that_of_the_softmax_mix():
    # two blocks, fixed scale: the gradient equals autograd through the documented mix
    torch.manual_seed(3)
    vq = LeechVQ(24, codebook="ball", gain=None, estimator="soft", soft_k=6,
                 soft_temperature=0.5).train()
    x = torch.randn(8, 24, dtype=torch.float64)
    vq.double()
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    q, _, _ = vq(xg)
    g = torch.randn_like(q)
    (q * g).sum().backward()
    assert torch.isfinite(xg.grad).all()
    # a lower temperature gives sharper weights, so (on the same candidates) a larger gradient
    vq2 = LeechVQ(24, codebook="ball", gain=None, estimator="soft", soft_k=6,
                  soft_temperature=50.0).train().double()
    xg2 = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    q2, _, _ = vq2(xg2)
    (q2 * g).sum().backward()
    assert xg2.grad.norm() < xg.grad.norm()


def test_rotation_trick_maps_to_rotation_estimator():
    a = LeechVQ(48, rotation_trick=True)
    b = LeechVQ(48, estimator="rotation")
    assert a.estimator == "rotation" and a.rotation_trick and b.rotation_trick
    x = torch.randn(6, 48)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a(xa)[0].sum().backward()
    b(xb)[0].sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert LeechVQ(48, estimator="rotation", rotation_trick=True).estimator == "rotation"


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input(est, dtype):
    vq = LeechVQ(48, codebook="ball", estimator=est).train()
    x = torch.randn(8, 48).to(dtype).requires_grad_(True)
    q, idx, aux = vq(x)
    assert q.dtype == dtype and idx.dtype == torch.int64
    q.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


@settings(deadline=None, max_examples=15)
@given(st.integers(0, 2**31 - 1), st.sampled_from(ESTIMATORS), st.sampled_from([0, 2, 4]))
def test_estimators_eval_is_hard_and_train_indices_agree(seed, est, cb):
    kw = [dict(), dict(codebook="ball", max_norm=6), dict(codebook="e8", max_norm=4)]
    kw = kw[cb // 2]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 48, generator=g) * 2
    vq = LeechVQ(48, estimator=est, **kw).eval()
    q, idx, _ = vq(x)
    ref = LeechVQ(48, **kw).eval()
    q0, idx0, _ = ref(x)
    assert torch.equal(idx, idx0) and torch.equal(q, q0)
    vq.train()
    _, idx1, _ = vq(x)
    assert torch.equal(idx1, idx0)


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("kw", CODEBOOKS)
def test_empty_batch_every_estimator(kw, est):
    vq = LeechVQ(48, estimator=est, commitment_weight=1.0, **kw).train()
    x = torch.randn(0, 48, requires_grad=True)
    q, idx, aux = vq(x, torch.zeros(0, dtype=torch.bool))
    assert q.shape == (0, 48) and idx.shape == (0, 2) and float(aux.detach()) == 0.0
    (q.sum() + aux).backward()
