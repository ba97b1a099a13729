"""LeechKernel and FrozenKernelAttention: frozen, orthogonal, lattice-preserving, and not
score-neutral (the kernel changes the attention; a rotation inside the heads does not)."""

import copy
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from torch_ext import FrozenKernelAttention, LeechKernel
from torch_ext.kernel import kernel_matrix

# ---------------------------------------------------------------------------
# LeechKernel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["leech", "random", "identity"])
def test_kernel_orthogonal_block_diagonal_frozen(kind):
    k = LeechKernel(72, kind=kind, seed=5)
    w = k.weight
    assert w.shape == (72, 72) and w.dtype == torch.float32
    assert (w @ w.T - torch.eye(72)).abs().max() < 1e-6
    mask = torch.block_diag(*[torch.ones(24, 24)] * 3).bool()
    assert (w[~mask] == 0).all()
    assert list(k.parameters()) == [] and list(k.state_dict()) == []
    assert not w.requires_grad
    assert [n for n, _ in k.named_buffers()] == ["weight"]


def test_leech_kernel_blocks_are_lattice_automorphisms(leech):
    w = kernel_matrix(48, "leech", seed=2).numpy()
    assert np.array_equal(w @ w.T, np.eye(48))  # exact: entries are multiples of 1/8
    assert np.array_equal(np.rint(w * 8) / 8, w)
    mv = leech.minimal_vectors(coords="int")[::97].astype(np.float64)
    for b in range(2):
        a = w[24 * b : 24 * b + 24, 24 * b : 24 * b + 24]
        assert not np.array_equal(np.abs(a), np.eye(24))  # not a signed permutation... usually
        img = mv @ a.T
        assert leech.contains(img, coords="int").all()


def test_kernel_is_deterministic_and_seed_dependent():
    a = LeechKernel(48, "leech", seed=1).weight
    b = LeechKernel(48, "leech", seed=1).weight
    c = LeechKernel(48, "leech", seed=2).weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:24, :24], a[24:, 24:])  # blocks differ
    r1 = LeechKernel(48, "random", seed=1).weight
    assert torch.equal(r1, LeechKernel(48, "random", seed=1).weight)
    assert not torch.equal(r1, LeechKernel(48, "random", seed=2).weight)


def test_kernel_survives_module_moves_but_not_state_dict():
    k = LeechKernel(24, "leech", seed=3)
    k2 = copy.deepcopy(k).double()
    assert k2.weight.dtype == torch.float64
    assert torch.equal(k2.weight.float(), k.weight)
    x = torch.randn(5, 24)
    torch.testing.assert_close(k(x), x @ k.weight.T)


@pytest.mark.parametrize(
    "args, exc, words",
    [
        ((25,), ValueError, "multiple of 24"),
        ((0,), ValueError, "d_model"),
        ((24, "hadamard"), ValueError, "kind"),
        ((24, "leech", -1), ValueError, "seed"),
        ((24.0,), TypeError, "d_model"),
        ((24, None), TypeError, "kind"),
    ],
)
def test_kernel_errors(args, exc, words):
    with pytest.raises(exc, match=words):
        LeechKernel(*args)


# ---------------------------------------------------------------------------
# FrozenKernelAttention
# ---------------------------------------------------------------------------


def _load_neutrality_benchmark():
    """``benchmarks/kernel_neutrality.py``: its ``pair`` is the set-up these tests assert."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "kernel_neutrality.py")
    spec = importlib.util.spec_from_file_location("kernel_neutrality", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: two attentions that differ only in their frozen kernel (same v/out weights)
_pair = _load_neutrality_benchmark().pair


def test_attention_shapes_and_parameters():
    a = FrozenKernelAttention(48, 4, 16)
    assert sorted(n for n, _ in a.named_parameters()) == ["out_proj.weight", "v_proj.weight"]
    assert list(a.state_dict()) == ["v_proj.weight", "out_proj.weight"]
    x = torch.randn(2, 16, 48)
    assert a(x).shape == (2, 16, 48)
    assert a.scores(x).shape == (2, 4, 16, 16)
    lrn = FrozenKernelAttention(48, 4, 16, mode="learned", bias=True)
    shapes = {n: tuple(p.shape) for n, p in lrn.named_parameters()}
    # q, k and v are one fused linear (rows: queries, keys, values)
    assert shapes == {"c_attn.weight": (144, 48), "c_attn.bias": (144,),
                      "out_proj.weight": (48, 48), "out_proj.bias": (48,)}
    assert lrn(x).shape == (2, 16, 48)


@pytest.mark.parametrize("mode", ["frozen", "learned"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_equals_manual(mode, with_mask):
    torch.manual_seed(1)
    a = FrozenKernelAttention(48, 2, 20, mode=mode, shared_qk=False).eval()
    b = FrozenKernelAttention(48, 2, 20, mode=mode, shared_qk=False, use_sdpa=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 20, 48)
    mask = None
    if with_mask:
        mask = torch.ones(3, 20, dtype=torch.bool)
        mask[0, 15:] = False  # right padding
        mask[1, :4] = False  # left padding: early queries see only themselves
    ya, yb = a(x, mask), b(x, mask)
    assert torch.isfinite(ya).all()
    assert (ya - yb).abs().max() < 1e-5


def test_attention_is_causal_and_ignores_padding_keys():
    torch.manual_seed(2)
    a = FrozenKernelAttention(48, 2, 16).eval()
    x = torch.randn(1, 16, 48)
    y = a(x)
    x2 = x.clone()
    x2[:, 10:] = torch.randn(1, 6, 48)
    assert torch.equal(a(x2)[:, :10], y[:, :10])  # the future does not leak
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[:, :3] = False
    x3 = x.clone()
    x3[:, :3] = torch.randn(1, 3, 48)
    ym, y3 = a(x, mask), a(x3, mask)
    assert (ym[:, 3:] - y3[:, 3:]).abs().max() < 1e-6  # padded keys have no influence


def _max_diff(a, b, x):
    with torch.no_grad():
        s = (a.scores(x) - b.scores(x)).nan_to_num(0.0).abs().max().item()
        o = (a(x) - b(x)).abs().max().item()
    return s, o


@pytest.mark.parametrize(
    "ka, kb, sa, sb, shared",
    [
        ("leech", "leech", 0, 1, True),  # two Leech kernels
        ("leech", "identity", 0, 0, True),  # Leech vs no kernel
        ("leech", "random", 0, 0, True),  # Leech vs Haar-random
        ("leech", "leech", 0, 7, False),  # separate q/k kernels
    ],
)
def test_kernel_is_not_score_neutral(ka, kb, sa, sb, shared):
    a, b = _pair(ka, kb, seed_a=sa, seed_b=sb, shared=shared)
    x = torch.randn(4, 24, 48, generator=torch.Generator().manual_seed(3))
    ds, do = _max_diff(a, b, x)
    # scores are O(1); two kernels change them by O(1), and the outputs with them
    assert ds > 0.5, ds
    assert do > 1e-3, do


def test_rotation_inside_each_head_is_neutral():
    a, _ = _pair("leech", "leech")
    x = torch.randn(4, 24, 48, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    rot = torch.stack(
        [torch.linalg.qr(torch.randn(a.head_dim, a.head_dim, generator=g))[0] for _ in range(a.n_head)]
    )  # (H, hd, hd): block-orthogonal within each head's dims
    with torch.no_grad():
        q, k, v = a.qkv(x)
        q2 = torch.einsum("hij,bhtj->bhti", rot, q)
        k2 = torch.einsum("hij,bhtj->bhti", rot, k)
        s1 = q @ k.transpose(-2, -1)
        s2 = q2 @ k2.transpose(-2, -1)
        y1 = a.merge(a.attend(q, k, v))
        y2 = a.merge(a.attend(q2, k2, v))
    assert (s1 - s2).abs().max() < 1e-5
    assert (y1 - y2).abs().max() < 1e-6
    assert torch.allclose(y1, a(x), atol=1e-6)


def test_using_the_same_kernel_for_q_and_k_would_cancel():
    """Why keys use W.T: with W on both sides, whole-block heads score x_h . x'_h."""
    a, ident = _pair("leech", "identity")
    x = torch.randn(2, 10, 48)
    w = a.q_kernel.weight
    q = a._split(x @ w.T)
    k = a._split(x @ w.T)
    qi, ki, _ = ident.qkv(x)  # identity kernel: q = k = x
    naive = q @ k.transpose(-2, -1)
    plain = qi @ ki.transpose(-2, -1)
    torch.testing.assert_close(naive, plain, rtol=1e-5, atol=1e-4)  # the LILA mistake: it cancels
    ours = a.scores(x).nan_to_num(0.0) - ident.scores(x).nan_to_num(0.0)
    assert ours.abs().max() > 0.5


def test_qk_matrices_define_the_form():
    a, _ = _pair("leech", "leech")
    wq, wk = a.qk_matrices()
    assert torch.equal(wk, wq.T)
    assert not torch.equal(wq @ wq, torch.eye(48))  # the per-block form W^2 is not trivial


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(d_model=50, n_head=2), ValueError, "multiple of 24"),
        (dict(d_model=48, n_head=5), ValueError, "divisible"),
        (dict(mode="sparse"), ValueError, "mode"),
        (dict(kernel="hadamard"), ValueError, "kernel"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(attn_dropout=-0.1), ValueError, "attn_dropout"),
        (dict(attn_dropout="0"), TypeError, "attn_dropout"),
        (dict(shared_qk=1), TypeError, "shared_qk"),
    ],
)
def test_attention_errors(kwargs, exc, words):
    args = dict(d_model=48, n_head=2, block_size=8)
    args.update(kwargs)
    with pytest.raises(exc, match=words):
        FrozenKernelAttention(**args)


def test_attention_input_errors():
    a = FrozenKernelAttention(48, 2, 8)
    with pytest.raises(ValueError, match="block_size"):
        a(torch.randn(1, 9, 48))
    with pytest.raises(ValueError, match="mask"):
        a(torch.randn(1, 8, 48), torch.ones(1, 7))
    with pytest.raises(ValueError, match=r"\(B, T, 48\)"):
        a(torch.randn(8, 48))


# ---------------------------------------------------------------------------
# how the frozen kernels are applied: blocks, the folded form, the cast cache
# ---------------------------------------------------------------------------


def test_blockwise_and_diag_blocks():
    from torch_ext.kernel import blockwise, diag_blocks

    w = kernel_matrix(72, "random", seed=4)
    b = diag_blocks(w)
    assert b.shape == (3, 24, 24) and torch.equal(torch.block_diag(*b), w)
    x = torch.randn(2, 5, 72, dtype=torch.float64)
    torch.testing.assert_close(blockwise(x, b), x @ w, rtol=0, atol=1e-13)
    k = LeechKernel(72, "random", seed=4)
    torch.testing.assert_close(k(x.float()), x.float() @ k.weight.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 24"):
        diag_blocks(torch.zeros(25, 25))
    with pytest.raises(ValueError, match="do not match"):
        blockwise(torch.zeros(2, 48), b)
    with pytest.raises(TypeError, match="dtype"):
        k(x)  # float64 input, float32 kernel


def _dense_scores(a, x):
    """Scores from the dense matrices, as the projections are defined: q = x Wq^T, k = x Wk^T."""
    wq, wk = a.qk_matrices()
    q = a._split(x @ wq.T.to(x.dtype))
    k = a._split(x @ wk.T.to(x.dtype))
    return q, k, (q @ k.transpose(-2, -1)) / math.sqrt(a.head_dim)


# (d_model, n_head): whole-block heads (folded) and heads that cut the 24-blocks
SHAPES = [(48, 2), (96, 2), (48, 4), (72, 4)]


@pytest.mark.parametrize("d, h", SHAPES)
@pytest.mark.parametrize("kernel, shared", [("leech", True), ("leech", False), ("random", True),
                                            ("random", False)])
def test_frozen_scores_equal_the_dense_form_float64(d, h, kernel, shared):
    torch.manual_seed(0)
    a = FrozenKernelAttention(d, h, 16, kernel=kernel, kernel_seed=3, shared_qk=shared).double()
    assert a.folded == (d // h % 24 == 0)
    x = torch.randn(3, 16, d, dtype=torch.float64)
    q, k, dense = _dense_scores(a, x)
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    with torch.no_grad():
        got = a.scores(x)
        assert torch.isinf(got[..., ~causal]).all()
        torch.testing.assert_close(got[..., causal], dense[..., causal], rtol=0, atol=1e-12)
        v = a._split(a.v_proj(x))
        want = a.merge(a.attend(q, k, v))
        torch.testing.assert_close(a(x), want, rtol=0, atol=1e-12)
        q2, k2, v2 = a.qkv(x)  # the projections themselves, block by block
        torch.testing.assert_close(q2, q, rtol=0, atol=1e-12)
        torch.testing.assert_close(k2, k, rtol=0, atol=1e-12)
        if a.folded:  # queries are the input itself; keys carry the whole form
            qf, kf, _ = a.project(x)
            assert torch.equal(qf, a._split(x))
            assert (kf - k).abs().max() > 0.1


@pytest.mark.parametrize("d, h", SHAPES)
def test_frozen_scores_equal_the_dense_form_float32(d, h):
    torch.manual_seed(1)
    a = FrozenKernelAttention(d, h, 16, kernel="random", shared_qk=False)
    x = torch.randn(2, 16, d)
    _, _, dense = _dense_scores(a, x)
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(a.scores(x)[..., causal], dense[..., causal], rtol=1e-5, atol=1e-5)


def test_fold_is_the_co0_element_W_squared():
    """Shared kernel, whole-block heads: the form of block b is (W_b^2)^T, exactly.

    The keys carry it transposed: k'_b = x_b W_b^2."""
    a = FrozenKernelAttention(48, 2, 8, kernel="leech", kernel_seed=5)
    x = torch.randn(1, 4, 48)
    fold = a._frozen("fold", x)
    wb = a.q_kernel.blocks
    assert torch.equal(fold, wb @ wb)  # multiples of 1/64: exact in float32
    assert torch.equal(fold @ fold.transpose(1, 2), torch.eye(24).expand(2, 24, 24))


def test_frozen_kernel_is_cast_once_per_dtype_and_device():
    torch.manual_seed(2)
    a = FrozenKernelAttention(96, 2, 16, kernel="random")
    x = torch.randn(2, 16, 96)
    y = a(x)
    # the folded form is a non-persistent buffer, used as it is in its own dtype
    assert a._frozen("fold", x) is a.k_fold and a._frozen_cache == {}
    assert list(a.state_dict()) == ["v_proj.weight", "out_proj.weight"]
    blocks = a._frozen("wq", x)  # the blocks of qkv(): made once, then cached
    assert a._frozen("wq", x) is blocks
    assert [(k[0], k[1]) for k in a._frozen_cache] == [("wq", torch.float32)]
    bf = a._frozen("fold", x.bfloat16())  # another dtype: cast once, cached
    assert bf.dtype == torch.bfloat16 and a._frozen("fold", x.bfloat16()) is bf
    a.double()  # .to() replaces the kernel buffers: the cache is dropped, k_fold derived again
    assert a._frozen_cache == {}
    assert a.k_fold.dtype == torch.float64 and torch.equal(a.k_fold, a._derive("fold"))
    y64 = a(x.double())
    assert a._frozen("fold", x.double()) is a.k_fold
    torch.testing.assert_close(y64.float(), y, rtol=1e-5, atol=1e-6)
    _, _, dense = _dense_scores(a, x.double())
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(a.scores(x.double())[..., causal], dense[..., causal],
                                   rtol=0, atol=1e-12)
    a.float()
    with torch.inference_mode():  # built under inference mode, then used for training
        a(x)
    a(x).sum().backward()
    assert a.v_proj.weight.grad is not None


def test_frozen_kernel_under_bf16_autocast():
    torch.manual_seed(3)
    a = FrozenKernelAttention(96, 2, 16)
    x = torch.randn(2, 16, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = a(x)
    assert y.dtype == torch.bfloat16
    assert ("fold", torch.bfloat16, x.device) in a._frozen_cache
    torch.testing.assert_close(y.float(), a(x), rtol=0.05, atol=0.02)


# ---------------------------------------------------------------------------
# learned mode: fused q/k/v, old state dicts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_learned_loads_separate_qkv_state_dicts(bias):
    torch.manual_seed(4)
    a = FrozenKernelAttention(48, 2, 16, mode="learned", bias=bias)
    old = {k: v for k, v in a.state_dict().items() if not k.startswith("c_attn")}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):  # the format before fusion
        old[f"{name}.weight"] = a.c_attn.weight[48 * i : 48 * (i + 1)].detach().clone()
        if bias:
            old[f"{name}.bias"] = a.c_attn.bias[48 * i : 48 * (i + 1)].detach().clone()
    b = FrozenKernelAttention(48, 2, 16, mode="learned", bias=bias)
    b.load_state_dict(old, strict=True)
    assert torch.equal(b.c_attn.weight, a.c_attn.weight)
    x = torch.randn(2, 16, 48)
    assert torch.equal(b(x), a(x))
    wq, wk = b.qk_matrices()
    assert torch.equal(wq, old["q_proj.weight"]) and torch.equal(wk, old["k_proj.weight"])
    partial = dict(old)
    del partial["k_proj.weight"]  # an incomplete triple is not fused: load_state_dict says so
    with pytest.raises(RuntimeError, match="c_attn.weight"):
        FrozenKernelAttention(48, 2, 16, mode="learned", bias=bias).load_state_dict(partial)


# ---------------------------------------------------------------------------
# key/value cache
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode, d, h", [("frozen", 96, 2), ("frozen", 48, 4), ("learned", 48, 2)])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_cache_gives_the_full_forward(mode, d, h, use_sdpa):
    from torch_ext.attention import KVCache

    torch.manual_seed(5)
    a = FrozenKernelAttention(d, h, 12, mode=mode, use_sdpa=use_sdpa).eval()
    x = torch.randn(2, 12, d)
    with torch.no_grad():
        full = a(x)
        cache = KVCache(2, h, 12, d // h)
        parts = [a(x[:, :5], cache=cache)]  # a prefix, then one token at a time, then three
        parts += [a(x[:, t : t + 1], cache=cache) for t in range(5, 9)]
        parts.append(a(x[:, 9:], cache=cache))
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-6)


def test_cache_errors():
    from torch_ext.attention import KVCache

    a = FrozenKernelAttention(48, 2, 8)
    c = KVCache(1, 2, 8, 24)
    with pytest.raises(ValueError, match="mask and cache"):
        a(torch.randn(1, 4, 48), torch.ones(1, 4), cache=c)
    with pytest.raises(TypeError, match="KVCache"):
        a(torch.randn(1, 4, 48), cache={})
    a(torch.randn(1, 6, 48), cache=c)
    with pytest.raises(ValueError, match="holds 8 positions"):
        a(torch.randn(1, 3, 48), cache=c)
    with pytest.raises(ValueError, match="shape"):
        c.append(torch.zeros(2, 2, 1, 24), torch.zeros(2, 2, 1, 24))
    c.reset()
    assert c.length == 0 and "length=0" in repr(c)
    with pytest.raises(ValueError, match="max_len"):
        KVCache(1, 2, 0, 24)
    with pytest.raises(TypeError, match="dtype"):
        KVCache(1, 2, 4, 24, dtype=torch.int64)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_attn_dropout_applies_to_probabilities_only(use_sdpa):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 24) for _ in range(3))
    # residual dropout on, attention dropout off: attend is deterministic in training
    a = FrozenKernelAttention(48, 2, 8, dropout=0.5, attn_dropout=0.0, use_sdpa=use_sdpa).train()
    assert torch.equal(a.attend(q, k, v), a.attend(q, k, v))
    # attention dropout on: two training calls differ, evaluation ignores it
    b = FrozenKernelAttention(48, 2, 8, dropout=0.0, attn_dropout=0.5, use_sdpa=use_sdpa).train()
    assert not torch.equal(b.attend(q, k, v), b.attend(q, k, v))
    b.eval()
    torch.testing.assert_close(b.attend(q, k, v), a.eval().attend(q, k, v))
