"""AlignmentLoss: values against brute force, masks, zero blocks, gradients, errors."""

import numpy as np
import pytest
import torch

from leechlib._kernels.reference import nearest_minvec_ref
from torch_ext import AlignmentLoss
from torch_ext.losses import block_abs_cosine


def test_minimal_matches_brute_force_abs_cosine():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 48, generator=g, dtype=torch.float64)
    blocks = h.reshape(-1, 24).numpy()
    _, ip, _ = nearest_minvec_ref(blocks)  # max inner product over all 196560 (int model)
    _, ip_neg, _ = nearest_minvec_ref(-blocks)
    best = np.maximum(ip, ip_neg) / (np.sqrt(32.0) * np.linalg.norm(blocks, axis=1))
    loss = AlignmentLoss("minimal")(h)
    assert float(loss) == pytest.approx(1.0 - best.mean(), abs=1e-12)
    cos, valid = block_abs_cosine(h.reshape(-1, 24), "minimal")
    np.testing.assert_allclose(cos.numpy(), best, rtol=1e-12)
    assert valid.all()


def test_frame_and_tensor_directions():
    h = torch.randn(4, 24, dtype=torch.float64)
    want = (h.abs().amax(-1) / h.norm(dim=-1)).mean()
    assert float(AlignmentLoss("frame")(h)) == pytest.approx(1 - float(want), abs=1e-12)
    eye = torch.eye(24, dtype=torch.float64) * 3.0
    assert float(AlignmentLoss(eye)(h)) == pytest.approx(1 - float(want), abs=1e-12)
    d = torch.randn(7, 24)
    dn = d / d.norm(dim=1, keepdim=True)
    want = ((h.float() @ dn.T).abs().amax(-1) / h.float().norm(dim=-1)).mean()
    assert float(AlignmentLoss(d)(h.float())) == pytest.approx(1 - float(want), abs=1e-6)


def test_lattice_directions_give_zero_loss(leech):
    mv = torch.from_numpy(leech.minimal_vectors()[::5000].copy()).float()  # (40, 24)
    h = (mv * 3.7).reshape(4, 10, 24).repeat(1, 1, 2)  # (4, 10, 48)
    assert float(AlignmentLoss("minimal")(h)) == pytest.approx(0.0, abs=1e-6)


def test_mask_and_zero_blocks():
    h = torch.randn(2, 4, 48)
    h[0, 1, :24] = 0.0  # a zero block: excluded, no NaN
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    loss_fn = AlignmentLoss("minimal", weight=2.0)
    loss = loss_fn(h, mask)
    cos, valid = block_abs_cosine(h.reshape(2, 4, 2, 24), "minimal")
    w = valid.float() * mask.unsqueeze(-1)
    assert float(loss) == pytest.approx(2.0 * (1 - float((cos * w).sum() / w.sum())), abs=1e-6)
    h2 = h.clone()
    h2[0, 3] = torch.randn(48) * 100  # padded positions do not matter
    assert float(loss_fn(h2, mask)) == pytest.approx(float(loss), abs=1e-6)


@pytest.mark.parametrize("directions", ["minimal", "frame", "tensor"])
def test_gradients_finite_with_zero_blocks(directions):
    d = torch.randn(5, 24) if directions == "tensor" else directions
    h = torch.randn(2, 3, 48)
    h[0, 0] = 0.0
    h[1, 2, 24:] = 0.0
    h.requires_grad_(True)
    loss = AlignmentLoss(d)(h)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()
    assert h.grad.abs().sum() > 0
    assert (h.grad[0, 0] == 0).all()


def test_everything_masked_or_zero():
    assert float(AlignmentLoss(weight=0.5)(torch.zeros(2, 3, 24))) == 0.5
    h = torch.randn(2, 3, 24, requires_grad=True)
    loss = AlignmentLoss()(h, torch.zeros(2, 3))
    loss.backward()
    assert float(loss.detach()) == 1.0 and torch.isfinite(h.grad).all()


def test_bf16_input():
    h = torch.randn(2, 3, 48).bfloat16()
    loss = AlignmentLoss()(h)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize(
    "args, exc, words",
    [
        (("octahedral",), ValueError, "directions"),
        ((torch.randn(3, 23),), ValueError, r"\(k, 24\)"),
        ((torch.zeros(2, 24),), ValueError, "zero vector"),
        ((torch.ones(2, 24, dtype=torch.int64),), TypeError, "floating"),
        ((5,), TypeError, "directions"),
        (("minimal", -1.0), ValueError, "weight"),
        (("minimal", "1"), TypeError, "weight"),
    ],
)
def test_constructor_errors(args, exc, words):
    with pytest.raises(exc, match=words):
        AlignmentLoss(*args)


def test_forward_errors():
    f = AlignmentLoss()
    with pytest.raises(ValueError, match="multiple of 24"):
        f(torch.randn(2, 30))
    with pytest.raises(ValueError, match="mask"):
        f(torch.randn(2, 3, 24), torch.ones(3, 2))
    with pytest.raises(TypeError, match="hidden"):
        f(np.zeros((2, 24)))
