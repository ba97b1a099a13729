"""torch_ext.quantize: LeechQuantizedLinear, quantize_model, bit counts, save/load, errors."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_ext.ops.codebook import ball_points, e8_table, shell_union_points
from torch_ext.quantize import (
    METHODS,
    LeechQuantizedLinear,
    load_quantized,
    model_bits_report,
    quantize_model,
    save_quantized,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = dict(max_points=64)


def _linear(in_f, out_f, seed=0, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():  # Gaussian weights with rows of different sizes
        lin.weight.copy_(torch.randn(out_f, in_f) * torch.linspace(0.02, 0.2, out_f)[:, None])
    return lin


def _reference(layer, W):
    """codes and weights of the leechlib quantizer applied to the padded, scaled blocks."""
    L, sp = layer.layout, layer.codec
    P = np.zeros((layer.out_features, L.padded))
    P[:, : layer.in_features] = W.detach().double().numpy()
    S = L.expand(layer.scales.double().numpy())  # (out, nblocks)
    Sx = np.where(S > 0, S, 1.0)
    x = (P.reshape(layer.out_features, L.nblocks, sp.block) / Sx[:, :, None]).reshape(-1, sp.block)
    q = layer.quantizer
    if layer.method == "leech-shape-gain":
        codes = q.pack(q.encode(x))
        U = q.decode(q.unpack(layer.codes().reshape(-1).numpy()))
    else:
        codes = q.encode(x)
        U = q.decode(layer.codes().reshape(-1).numpy())
    What = (U.reshape(layer.out_features, L.nblocks, sp.block) * S[:, :, None]).reshape(
        layer.out_features, L.padded)[:, : layer.in_features]
    return codes.reshape(layer.out_features, L.nblocks), What


# --------------------------------------------------------------------------- torch decoders


def test_torch_unrank_equals_leechlib_ball_and_shell(nrng):
    from leechlib import BallCodebook, ShellCodebook

    cb = BallCodebook(26, coords="int")
    edges = [0, cb.size - 1] + [o + d for o in cb.shell_offsets[1:] for d in (-1, 0, 1)]
    idx = np.concatenate([edges, nrng.integers(0, cb.size, 3000)]).astype(np.int64)
    got = ball_points(torch.from_numpy(idx), 26).numpy()
    np.testing.assert_array_equal(got, cb.point(idx).astype(np.int64))
    sc = ShellCodebook(24, coords="int")
    idx = np.concatenate([[0, sc.size - 1], nrng.integers(0, sc.size, 2000)]).astype(np.int64)
    pts, norms = shell_union_points(torch.from_numpy(idx), (24,))
    np.testing.assert_array_equal(pts.numpy(), sc.point(idx).astype(np.int64))
    assert bool((norms == 24).all())


def test_torch_unrank_union_of_shells(nrng):
    from leechlib import ShellCodebook

    a, b = ShellCodebook(8, coords="int"), ShellCodebook(6, coords="int")
    idx = np.array([0, a.size - 1, a.size, a.size + b.size - 1, 12345, a.size + 777])
    pts, norms = shell_union_points(torch.from_numpy(idx), (8, 6))
    ref = np.concatenate([a.point(idx[[0, 1, 4]]), b.point(idx[[2, 3, 5]] - a.size)])
    np.testing.assert_array_equal(pts.numpy()[[0, 1, 4, 2, 3, 5]], ref)
    assert norms.tolist() == [8, 8, 6, 6, 8, 6]


def test_e8_table_is_the_baseline_codebook():
    from leechlib.baselines import E8Quantizer

    np.testing.assert_array_equal(e8_table(10, "cpu", torch.float64).numpy(), E8Quantizer().codebook)


# --------------------------------------------------------------------------- codecs


def test_codec_registry_covers_the_methods():
    from torch_ext.quantize import codecs

    assert tuple(codecs._REGISTRY) == METHODS == ("leech-shape-gain", "leech-ball", "e8", "rtn", "leech-trio")
    for method in METHODS:
        c = codecs.get_codec(method, 2)
        assert isinstance(c, codecs.Codec) and type(c).name == method
        assert 2 ** (c.code_bits - 1) < c.size <= 2**c.code_bits
        assert c.code_bits / c.block <= 2.0
        g = c.initial_gains("cpu")
        assert (g is None) == (method != "leech-shape-gain")
        gains = None if g is None else g.double()
        codes = np.array([0, 1, c.size // 3, c.size - 1], dtype=np.int64)
        u = c.decode(codes, None if g is None else gains.numpy())
        assert u.shape == (4, c.block)
        ut = c.decode_torch(torch.from_numpy(codes), gains, torch.float64)
        np.testing.assert_allclose(ut.numpy(), u, rtol=1e-12, atol=1e-12)
        # a codeword is its own nearest codeword
        enc = c.encode(u, None if g is None else gains.numpy(), None)
        np.testing.assert_array_equal(enc, codes)
        again = codecs.get_codec(method, 2, json.loads(json.dumps(c.params)))
        assert (again.params, again.size, again.block) == (c.params, c.size, c.block)


def test_unknown_method_is_a_value_error_naming_method():
    from torch_ext.quantize.codecs import get_codec

    for bad in ["gptq", "", "LEECH-BALL", None, 3]:
        with pytest.raises(ValueError, match=r"unknown quantization method .*: method must be one "
                                             r"of \('leech-shape-gain', 'leech-ball', 'e8', 'rtn', 'leech-trio'\)"):
            get_codec(bad, 2)
        with pytest.raises(ValueError, match="method must be one of"):
            quantize_model(nn.Sequential(nn.Linear(24, 2)), method=bad)
        with pytest.raises(ValueError, match="method must be one of"):
            LeechQuantizedLinear(24, 2, method=bad)
    cfg = LeechQuantizedLinear(24, 2, method="rtn").config
    with pytest.raises(ValueError, match="unknown quantization method 'gptq'"):
        LeechQuantizedLinear.from_config({**cfg, "method": "gptq"})


def test_register_refuses_duplicates_and_non_codecs(monkeypatch):
    from torch_ext.quantize import codecs

    monkeypatch.setattr(codecs, "_REGISTRY", dict(codecs._REGISTRY))
    with pytest.raises(ValueError, match="'rtn' is already registered"):
        codecs.register(type("Again", (codecs.RtnCodec,), {}))
    with pytest.raises(ValueError, match="no method name"):
        codecs.register(type("Nameless", (codecs.Codec,), {}))
    with pytest.raises(TypeError, match="Codec subclasses"):
        codecs.register(int)


def test_a_new_method_is_one_registered_class(monkeypatch, tmp_path):
    from torch_ext.quantize import codecs

    monkeypatch.setattr(codecs, "_REGISTRY", dict(codecs._REGISTRY))

    @codecs.register
    class Ternary(codecs.Codec):  # levels -1, 0, 1 times the scale (RMS of the row)
        name = "ternary-test"

        def __init__(self, bits, params=None):
            self.bits, self.block, self.size, self.params = bits, 1, 3, {}

        def encode(self, x, gains, workers):
            return (np.clip(np.rint(x[:, 0]), -1, 1) + 1).astype(np.int64)

        def decode(self, codes, gains):
            return (codes - 1.0)[:, None]

        def decode_torch(self, codes, gains, dtype):
            return (codes.to(dtype) - 1.0).unsqueeze(-1)

    lin = _linear(10, 3)
    q = LeechQuantizedLinear.from_linear(lin, "ternary-test", bits=1.6, scale_iters=0)
    W = lin.weight.detach().double()
    s = W.pow(2).mean(1, keepdim=True).sqrt().half().double()  # the stored RMS scales
    expect = (s * torch.clamp(torch.round(W / s), -1, 1)).float()
    assert q.packed.shape == (3, 3) and torch.equal(q.dequantize(), expect)  # 10 x 2 bits a row
    net = nn.Sequential(q)
    path = tmp_path / "t.safetensors"
    save_quantized(net, path)
    back = load_quantized(path, model=nn.Sequential(nn.Linear(10, 3)))
    assert back[0].method == "ternary-test" and torch.equal(back[0].dequantize(), expect)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("method", ["leech-shape-gain", "leech-ball", "e8"])
@pytest.mark.parametrize("group", ["row", "tensor", 48])
def test_dequantized_equals_leechlib_decode_encode(method, group):
    lin = _linear(72 if group != 48 else 100, 6)
    q = LeechQuantizedLinear.from_linear(lin, method, 2, group=group, scale_iters=0, **FAST)
    codes, What = _reference(q, lin.weight)
    np.testing.assert_array_equal(q.codes().numpy(), codes)  # codes = encode(W / scale)
    np.testing.assert_allclose(q.dequantize().numpy(), What.astype(np.float32), rtol=1e-6, atol=0)
    assert q.dequantize(torch.float64).dtype == torch.float64


@pytest.mark.parametrize("method", METHODS)
def test_scale_refit_lowers_the_error_and_keeps_decode(method):
    lin = _linear(96, 8, seed=1)
    q0 = LeechQuantizedLinear.from_linear(lin, method, 2, scale_iters=0, **FAST)
    q1 = LeechQuantizedLinear.from_linear(lin, method, 2, scale_iters=2, **FAST)
    assert q1.stats["mse"] <= q0.stats["mse"] * (1 + 1e-9)
    mse = float(((q1.dequantize().double() - lin.weight.detach().double()) ** 2).mean())
    assert mse == pytest.approx(q1.stats["mse"], rel=1e-5)
    if method != "rtn":  # weights are scale * decode(code) whatever the scales
        np.testing.assert_allclose(q1.dequantize().numpy(), _reference(q1, lin.weight)[1],
                                   rtol=1e-6, atol=1e-12)


def test_rtn_levels_and_mse_scale():
    lin = _linear(40, 3, bias=False)
    q = LeechQuantizedLinear.from_linear(lin, "rtn", 2, scale_iters=0)
    w, c = q.dequantize().double(), q.codes()
    s = q.scales.double()
    np.testing.assert_allclose(w.numpy(), (s * (c.double() - 1.5)).numpy(), rtol=1e-6)
    # each row's step is the best of the 96-point grid: better than absmax / 1.5
    W = lin.weight.detach().double()
    for r in range(3):
        step = float(W[r].abs().max()) / 1.5
        k = torch.clamp(torch.floor(W[r] / step + 2), 0, 3)
        e_absmax = float(((W[r] - step * (k - 1.5)) ** 2).sum())
        assert float(((W[r] - w[r]) ** 2).sum()) <= e_absmax


@pytest.mark.parametrize("method", METHODS)
def test_forward_is_linear_with_the_dequantized_weight(method):
    lin = _linear(50, 7)
    q = LeechQuantizedLinear.from_linear(lin, method, 2, **FAST)
    x = torch.randn(3, 5, 50)
    w = q.dequantize()
    assert torch.equal(q(x), F.linear(x, w, q.bias))
    assert torch.equal(q(x), q(x))  # the cached weight
    q.cache = False
    q.clear_cache()
    if q.codec.packed(q.gains) is None:  # no table decode: the weight is decoded per forward
        assert torch.equal(q(x), F.linear(x, w, q.bias))
    else:  # from the packed codes (leechlib's kernel, float32 accumulation), no weight held
        torch.testing.assert_close(q(x), F.linear(x, w, q.bias), rtol=1e-5, atol=1e-5)
        assert not q._cache
        xg = x.clone().requires_grad_()
        q(xg).sum().backward()  # gradients for x: through the decoded weight
        torch.testing.assert_close(xg.grad, torch.ones(3, 5, 7) @ w)
    xd = x.double()
    assert torch.equal(q(xd), F.linear(xd, q.dequantize(torch.float64), q.bias.double()))
    assert q.bias is not lin.bias and torch.equal(q.bias, lin.bias)


def test_cache_follows_buffer_changes():
    q = LeechQuantizedLinear.from_linear(_linear(24, 2), "leech-ball", **FAST)
    x = torch.randn(1, 24)
    y = q(x)
    with torch.no_grad():
        q.scales.mul_(2)
    assert torch.allclose(q(x) - q.bias, 2 * (y - q.bias))


def test_padding_when_in_features_is_not_a_multiple_of_24():
    lin = _linear(50, 4)
    q = LeechQuantizedLinear.from_linear(lin, "leech-shape-gain", **FAST)
    L = q.layout
    assert (L.padded, L.nblocks) == (72, 3)
    assert q.codes().shape == (4, 3) and q.packed.shape == (4, 18)  # 3 x 48 bits
    assert q.dequantize().shape == (4, 50)
    # the decoded pad values are dropped, and the pad is coded as zeros
    codes, What = _reference(q, lin.weight)
    assert What.shape == (4, 50)


def test_bits_report_by_hand():
    # leech-ball, 50 inputs: 3 blocks of 48 bits per row = 18 bytes, one float16 scale
    q = LeechQuantizedLinear.from_linear(_linear(50, 4), "leech-ball", **FAST)
    r = q.bits_report()
    assert (r["code_bits"], r["scale_bits"], r["gain_bits"]) == (4 * 144, 4 * 16, 0)
    assert r["bits_per_weight"] == pytest.approx((4 * 144 + 64) / 200)
    # shape-gain adds its 3 float32 gains
    q = LeechQuantizedLinear.from_linear(_linear(48, 2), "leech-shape-gain", **FAST)
    assert q.bits_report()["gain_bits"] == 96
    assert q.bits_report()["bits_per_weight"] == pytest.approx((2 * 96 + 2 * 16 + 96) / 96)
    # e8, 20 inputs padded to 24: 3 codes x 16 bits = 6 bytes a row
    q = LeechQuantizedLinear.from_linear(_linear(20, 3), "e8", **FAST)
    assert q.packed.shape == (3, 6)
    assert q.bits_report()["bits_per_weight"] == pytest.approx((3 * 48 + 3 * 16) / 60)
    # rtn, 30 inputs: 60 bits -> 8 bytes a row; groups of 16: 2 scales a row
    q = LeechQuantizedLinear.from_linear(_linear(30, 5), "rtn", group=16)
    assert q.packed.shape == (5, 8) and q.scales.shape == (5, 2)
    assert q.bits_report()["bits_per_weight"] == pytest.approx((5 * 64 + 10 * 16) / 150)
    # one scale for the whole layer
    q = LeechQuantizedLinear.from_linear(_linear(48, 5), "leech-ball", group="tensor", **FAST)
    assert q.scales.shape == (1, 1)
    assert q.bits_report()["bits_per_weight"] == pytest.approx((5 * 96 + 16) / 240)


def test_zero_rows_and_tiny_scales():
    lin = _linear(48, 3)
    with torch.no_grad():
        lin.weight[1] = 0
    q = LeechQuantizedLinear.from_linear(lin, "leech-shape-gain", **FAST)
    assert float(q.scales[1, 0]) == 0.0 and bool((q.dequantize()[1] == 0).all())
    with torch.no_grad():
        lin.weight.mul_(1e-9)  # below float16: the scales stay float32
    q = LeechQuantizedLinear.from_linear(lin, "leech-ball", **FAST)
    assert q.scales.dtype == torch.float32 and q.bits_report()["scale_bits"] == 3 * 32
    rel = (q.dequantize() - lin.weight.detach()).pow(2).sum() / lin.weight.detach().pow(2).sum()
    assert float(rel) < 0.2
    zero = nn.Linear(24, 2)
    with torch.no_grad():
        zero.weight.zero_()
    assert bool((LeechQuantizedLinear.from_linear(zero, "leech-ball", **FAST).dequantize() == 0).all())


def test_extra_repr_and_config():
    q = LeechQuantizedLinear.from_linear(_linear(24, 2, bias=False), "e8", **FAST)
    assert "method='e8'" in repr(q) and "bias=False" in repr(q) and "bits_per_weight=2.667" in repr(q)
    cfg = q.config
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["params"] == {"max_norm": 10} and cfg["code_bits"] == 16
    empty = LeechQuantizedLinear.from_config(cfg)
    assert empty.packed.shape == q.packed.shape and empty.bias is None


# --------------------------------------------------------------------------- models


@pytest.fixture
def tiny():
    from torch_ext import LilaConfig, LilaTransformer

    torch.manual_seed(0)
    return LilaTransformer(LilaConfig.preset("lila-tiny"))


def test_quantize_model_lila_tiny_runs_and_shrinks(tiny):
    idx = torch.randint(0, 256, (2, 16))
    dense = model_bits_report(tiny)
    assert dense.quantized_weights == 0 and dense.total_bits == dense.dense_bits
    infos = []
    quantize_model(tiny, 2, "leech-shape-gain", callback=lambda n, i: infos.append((n, i)), **FAST)
    kinds = {n: type(m).__name__ for n, m in tiny.named_modules()}
    assert kinds["h.0.mlp.c_fc"] == kinds["h.1.attn.out_proj"] == "LeechQuantizedLinear"
    assert not any(type(m) is nn.Linear for m in tiny.modules())
    assert [n for n, _ in infos] == [n for n, m in tiny.named_modules()
                                     if isinstance(m, LeechQuantizedLinear)]
    out = tiny(idx, targets=idx)
    assert bool(torch.isfinite(out.loss))
    r = model_bits_report(tiny)
    assert r.quantized_weights == 2 * (2 * 48 * 48 + 2 * 4 * 48 * 48)
    # 48 bits a block; scales: 16 bits per row of 48 or 192 inputs; 3 float32 gains a layer
    rows48 = 2 * (48 + 48 + 4 * 48)
    rows192 = 2 * 48
    expect = r.quantized_weights * 2 + 16 * (rows48 + rows192) + 8 * 96
    assert r.quantized_bits == expect
    assert r.total_bits < 0.45 * r.dense_bits  # embeddings stay float32
    assert r.total_params == r.quantized_weights + sum(p.numel() for p in tiny.parameters())
    assert "| **whole model**" in r.to_markdown()


def test_bits_report_repr_is_a_summary_and_table_lists_every_layer(tiny):
    quantize_model(tiny, method="rtn")
    r = model_bits_report(tiny)
    names = [layer["name"] for layer in r.layers]
    assert names == [n for n, m in tiny.named_modules() if isinstance(m, LeechQuantizedLinear)]
    assert len(names) == 8  # v and out projections, two MLP layers, in 2 blocks
    text = repr(r)  # one short line, whatever the number of layers
    assert "\n" not in text and len(text) < 200 and not any(n in text for n in names)
    assert text.startswith(f"BitsReport(8 quantized layers: {r.quantized_weights} weights at ")
    assert f"{r.total_params} parameters" in text
    lines = r.table().splitlines()
    assert len(lines) == 1 + len(names) + 3
    assert lines[0].split()[:2] == ["layer", "method"]
    for line, layer in zip(lines[1:], r.layers, strict=False):
        cells = line.split()
        assert cells[:2] == [layer["name"], "rtn"]
        assert [int(c) for c in cells[2:6]] == [layer[k] for k in ("weights", "code_bits",
                                                                    "scale_bits", "gain_bits")]
        assert float(cells[6]) == pytest.approx(layer["bits_per_weight"], abs=5e-5)
    total = lines[-3].split()
    assert total[:3] == ["quantized", "layers", str(r.quantized_weights)]
    assert sum(int(c) for c in total[3:6]) == r.quantized_bits
    assert lines[-2].split()[:3] == ["other", "tensors", str(r.other_params)]
    assert float(lines[-2].split()[3]) == pytest.approx(r.other_bits / r.other_params, abs=5e-5)
    assert lines[-1].split()[:3] == ["whole", "model", str(r.total_params)]
    assert float(lines[-1].split()[3]) == pytest.approx(r.bits_per_param, abs=5e-5)
    assert repr(model_bits_report(nn.Linear(3, 2))) == (
        "BitsReport(no quantized layers; whole model: 8 parameters at 32 bits/parameter)")


def test_quantize_model_skip_and_generic_modules():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("body", nn.Linear(24, 24))
    net.add_module("lm_head", nn.Linear(24, 10))
    quantize_model(net, method="rtn")
    assert isinstance(net.body, LeechQuantizedLinear) and type(net.lm_head) is nn.Linear
    with pytest.raises(ValueError, match="already quantized"):  # not a silent half re-quantization
        quantize_model(net, method="rtn", skip=())
    net = nn.Sequential()
    net.add_module("body", nn.Linear(24, 24))
    net.add_module("lm_head", nn.Linear(24, 10))
    quantize_model(net, method="rtn", skip=())
    assert isinstance(net.lm_head, LeechQuantizedLinear)
    r = model_bits_report(net)
    assert r.other_params == 24 + 10  # the biases


@torch.no_grad()
def _second_moments(model, names, data) -> dict:
    """E[x x^T] (float64) of the inputs of the named layers over ``data``, damped by 1 %."""
    sums, counts, hooks = {}, {}, []

    def hook_for(name):
        def hook(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    for n in names:
        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook_for(n)))
    was = model.training
    model.eval()
    try:
        model(data)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = {}
    for n, S in sums.items():
        H = S / counts[n]
        out[n] = H + 1e-2 * float(torch.diagonal(H).mean()) * torch.eye(H.shape[0], dtype=H.dtype)
    return out


@pytest.mark.parametrize("group", ["row", "tensor", 24])
def test_calibrated_scales_lower_the_weighted_error(tiny, group):
    data = torch.randint(0, 256, (4, 32))
    name = "h.0.mlp.c_fc"
    H = _second_moments(tiny, [name], data)
    lin = tiny.get_submodule(name)
    kw = dict(group=group, hessian=H[name], **FAST)
    q0 = LeechQuantizedLinear.from_linear(lin, "leech-ball", scale_iters=0, **kw)
    q1 = LeechQuantizedLinear.from_linear(lin, "leech-ball", scale_iters=2, **kw)

    def werr(q):
        e = q.dequantize().double() - lin.weight.detach().double()
        return float(torch.einsum("ri,ij,rj->", e, H[name], e))

    assert werr(q1) <= werr(q0) * (1 + 1e-9)
    quantize_model(tiny, method="leech-ball", data=[data[:2], (data[2:],)], **FAST)
    assert bool(torch.isfinite(tiny(data).logits).all())


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_lila(tiny, tmp_path):
    quantize_model(tiny, method="leech-ball", **FAST)
    path = tmp_path / "q.safetensors"
    save_quantized(tiny, path)
    back = load_quantized(path)
    idx = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, tiny(idx).logits)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("h.0.mlp.c_fc.packed").dtype == torch.uint8
    assert set(json.loads(meta["quantized_layers"])) == {
        n for n, m in tiny.named_modules() if isinstance(m, LeechQuantizedLinear)}


def test_save_load_generic_model_needs_a_skeleton(tmp_path):
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 3)),
                         method="leech-shape-gain", **FAST)
    path = tmp_path / "net.safetensors"
    save_quantized(net, path)
    with pytest.raises(ValueError, match="pass model="):
        load_quantized(path)
    back = load_quantized(path, model=nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 3)))
    x = torch.randn(4, 30)
    assert torch.equal(back(x), net(x))
    with pytest.raises(ValueError, match="is 9x30 in the model"):
        load_quantized(path, model=nn.Sequential(nn.Linear(30, 9), nn.ReLU(), nn.Linear(9, 3)))


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _v1_skeleton():
    return nn.Sequential(nn.Linear(50, 30), nn.ReLU(), nn.Linear(30, 20, bias=False), nn.ReLU(),
                         nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 5))


def test_files_of_format_v1_still_load():
    """``data/quantized-v1.safetensors`` was written by ``save_quantized`` before the
    module became a package (commit 8cdf7fe): ``_v1_skeleton()`` seeded with
    ``torch.manual_seed(0)``, layers 0, 2, 4, 6 quantized by ``from_linear(...,
    max_points=64)`` as leech-shape-gain (row scales), leech-ball (one scale),
    e8 (groups of 16) and rtn (groups of 4).  The reference file holds an input, the
    output of that model and each layer's float64 dequantized weight."""
    from safetensors.torch import load_file

    ref = load_file(os.path.join(DATA, "quantized-v1-reference.safetensors"))
    net = load_quantized(os.path.join(DATA, "quantized-v1.safetensors"), model=_v1_skeleton())
    methods = {0: "leech-shape-gain", 2: "leech-ball", 4: "e8", 6: "rtn"}
    assert {i: net[i].method for i in methods} == methods
    assert (net[2].bias, net[2].scales.shape, net[4].scales.shape) == (None, (1, 1), (12, 2))
    for i in methods:
        assert torch.equal(net[i].dequantize(torch.float64), ref[f"w{i}"]), i
    with torch.no_grad():
        assert torch.equal(net(ref["x"]), ref["y"])


def test_dequantization_does_not_need_numba(tiny, tmp_path):
    quantize_model(tiny, method="leech-shape-gain", **FAST)
    path = tmp_path / "q.safetensors"
    save_quantized(tiny, path)
    idx = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        ref = tiny(idx).logits
    torch.save({"idx": idx, "ref": ref}, tmp_path / "ref.pt")
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import torch\n"
        "from torch_ext.quantize import load_quantized\n"
        f"m = load_quantized({str(path)!r})\n"
        f"d = torch.load({str(tmp_path / 'ref.pt')!r})\n"
        "with torch.no_grad(): out = m(d['idx']).logits\n"
        # the same model: the torch transforms agree with the native ones to rounding
        "torch.testing.assert_close(out, d['ref'], rtol=1e-5, atol=1e-5)\n"
        "assert 'numba' not in sys.modules or sys.modules['numba'] is None\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_dequantize_and_forward(method):
    q = LeechQuantizedLinear.from_linear(_linear(50, 6), method, **FAST)
    w = q.dequantize()
    qc = q.to("cuda")
    torch.testing.assert_close(qc.dequantize().cpu(), w, rtol=1e-6, atol=0)
    x = torch.randn(3, 50)
    torch.testing.assert_close(qc(x.cuda()).cpu(), F.linear(x, w, q.bias.cpu()), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- errors


def test_nan_or_inf_weights_name_the_layer(tiny):
    with torch.no_grad():
        tiny.h[1].mlp.c_proj.weight[0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'h\.1\.mlp\.c_proj'.*NaN or inf"):
        quantize_model(tiny, method="rtn")
    assert not any(isinstance(m, LeechQuantizedLinear) for m in tiny.modules())  # untouched
    lin = nn.Linear(24, 2)
    with torch.no_grad():
        lin.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="'enc'.*NaN or inf"):
        LeechQuantizedLinear.from_linear(lin, "leech-ball", name="enc")


def test_codes_beyond_the_codebook(tmp_path):
    q = LeechQuantizedLinear.from_linear(_linear(24, 2), "leech-ball", **FAST)
    q.name = "dec"
    with torch.no_grad():
        q.packed[1].fill_(255)  # 2**48 - 1 > 280 974 212 784 721 codewords
    with pytest.raises(ValueError, match=r"'dec'.*beyond the codebook"):
        q.dequantize()
    with pytest.raises(ValueError, match="beyond the codebook"):
        q(torch.randn(1, 24))
    net = nn.Sequential(nn.Linear(16, 2))
    quantize_model(net, method="e8", **FAST)
    path = tmp_path / "bad.safetensors"
    with torch.no_grad():
        net[0].packed[0, :2] = 255  # code 65535 > 56 881
    save_quantized(net, path)
    with pytest.raises(ValueError, match=r"'0'.*beyond the codebook"):
        load_quantized(path, model=nn.Sequential(nn.Linear(16, 2)))


def test_bad_arguments():
    lin = _linear(24, 2)
    with pytest.raises(ValueError, match="unknown quantization method 'gptq'"):
        quantize_model(nn.Sequential(lin), method="gptq")
    with pytest.raises(ValueError, match="unknown quantization method"):
        LeechQuantizedLinear.from_linear(lin, "leech")
    with pytest.raises(ValueError, match="multiple of the block length 24"):
        LeechQuantizedLinear.from_linear(lin, "leech-ball", group=16)
    with pytest.raises(ValueError, match="group must be"):
        LeechQuantizedLinear.from_linear(lin, "rtn", group="col")
    with pytest.raises(ValueError, match=r"bits must be in \[1, 8\]"):
        LeechQuantizedLinear.from_linear(lin, "rtn", bits=9)
    with pytest.raises(ValueError, match="too small for the E8 ball"):
        LeechQuantizedLinear.from_linear(lin, "e8", bits=0.5)
    with pytest.raises(ValueError, match=r"leech-ball supports bits from .* got bits=3"):
        LeechQuantizedLinear.from_linear(lin, "leech-ball", bits=3)
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        LeechQuantizedLinear.from_linear(nn.Conv1d(2, 2, 1), "rtn")
    with pytest.raises(ValueError, match="hessian must be"):
        LeechQuantizedLinear.from_linear(lin, "rtn", hessian=torch.eye(3))


def test_load_rejects_foreign_and_tampered_files(tmp_path, tiny):
    from safetensors.torch import load_file, save_file

    p = tmp_path / "plain.safetensors"
    tiny.save(p)
    with pytest.raises(ValueError, match="not a quantized checkpoint"):
        load_quantized(p)
    quantize_model(tiny, method="rtn")
    q = tmp_path / "q.safetensors"
    save_quantized(tiny, q)
    from safetensors import safe_open

    with safe_open(str(q), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(q))
    t["h.0.attn.v_proj.scales"][0, 0] = float("inf")
    save_file(t, str(tmp_path / "inf.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="'h.0.attn.v_proj.scales' contains NaN or inf"):
        load_quantized(tmp_path / "inf.safetensors")
    with pytest.raises(FileNotFoundError):
        load_quantized(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("group", ["row", "tensor", 48, 5])
@pytest.mark.parametrize("levels", [4, 8, 16])
def test_rtn_scales_chunked_equal_reference(group, levels):
    # the row-chunked, in-place scale search gives bitwise the reference's scales
    from torch_ext.quantize import BlockLayout
    from torch_ext.quantize.codecs import _rtn_scales, _rtn_scales_reference

    rng = np.random.default_rng(levels)
    out_f, in_f = 70, 1100  # several row chunks, a partial last group
    W = rng.standard_t(3, size=(out_f, in_f)) * rng.uniform(0.01, 3.0, size=(out_f, 1))
    W[3] = 0.0  # an all-zero row (rms 0)
    W[5, ::7] = 40.0  # outliers
    L = BlockLayout(out_f, in_f, 1, group)
    blocks = np.zeros((out_f, L.nblocks, 1))
    blocks[:, :in_f, 0] = W
    sq = (blocks[:, :, 0] ** 2) * L.real[:, 0]
    rms = np.sqrt(L.group_sum(sq) / np.maximum(L.group_sum(np.broadcast_to(L.real[:, 0] * 1.0, sq.shape)), 1.0))
    a = _rtn_scales(blocks, L, rms, levels)
    b = _rtn_scales_reference(blocks, L, rms, levels)
    assert a.shape == b.shape == L.scale_shape
    np.testing.assert_array_equal(a, b)


def test_a_trio_model_runs_from_its_codes(tmp_path):
    """leech-trio: saved, loaded with cache=False, it holds only codes and scales while it
    runs (no dense weight in any layer) and computes what the dense weight computes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 24))
    quantize_model(net, method="leech-trio", rotation="hadamard", max_points=64)
    path = tmp_path / "trio.safetensors"
    save_quantized(net, path)
    small = load_quantized(path, model=nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 24)),
                           cache=False)
    x = torch.randn(4, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-4, atol=1e-5)
    for m in (small[0], small[2]):
        assert m.method == "leech-trio" and not m.cache and not m._cache  # no dense weight held
        assert m.config["code_bits"] == 48 and m.bits_report()["code_bits"] == m.out_features * m.layout.nblocks * 48
    with pytest.raises(TypeError, match="cache must be a bool"):
        load_quantized(path, model=nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 24)), cache="no")


def test_cache_default_follows_the_method(monkeypatch):
    """cache=None: a leech-trio layer holds only its codes, an enumerative one caches the
    dense weight; inputs of more than codes_max_rows rows decode the weight for the
    forward (never kept) instead of the codes kernel, with the same result."""
    import torch_ext.quantize.layer as layer_mod

    torch.manual_seed(0)
    lin = nn.Linear(48, 16)
    trio = LeechQuantizedLinear.from_linear(lin, "leech-trio", max_points=64)
    sg = LeechQuantizedLinear.from_linear(lin, "leech-shape-gain", max_points=64)
    assert trio.cache is False and sg.cache is True
    assert LeechQuantizedLinear.from_linear(lin, "leech-trio", max_points=64, cache=True).cache is True
    with pytest.raises(TypeError, match="cache must be a bool or None, got str"):
        LeechQuantizedLinear(48, 16, method="rtn", cache="no")
    calls = []
    real = layer_mod.packed_matmul
    monkeypatch.setattr(layer_mod, "packed_matmul", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    w = trio.dequantize()
    n = LeechQuantizedLinear.codes_max_rows
    with torch.no_grad():
        for rows in (1, n, n + 1, 3 * n):
            x = torch.randn(rows, 48)
            torch.testing.assert_close(trio(x), F.linear(x, w, trio.bias), rtol=1e-4, atol=1e-5)
    assert [c[0] for c in calls] == [1, n], calls          # the larger inputs decoded the weight
    assert not trio._cache                                 # ... and kept nothing


def test_trio_codec_bits_and_torch_decode():
    from leechlib.trio import TrioCodebook
    from torch_ext.quantize.codecs import get_codec

    c = get_codec("leech-trio", 2)
    assert (c.block, c.size, c.code_bits) == (24, 1 << 48, 48)
    codes = torch.tensor([0, 1, 2**47 + 12345, 2**48 - 1])
    want = TrioCodebook().point(codes.numpy()) / math.sqrt(8)
    assert torch.equal(c.decode_torch(codes, None, torch.float64), torch.from_numpy(want))
    for bad, exc in ((3, ValueError), (1.5, ValueError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="bits"):
            get_codec("leech-trio", bad)


def test_a_rebuilt_lila_model_holds_no_float_weight_of_its_quantized_layers(tiny, tmp_path, monkeypatch):
    """load_quantized without model= builds the LILA model on the meta device: its
    quantized layers never allocate a float weight (the memory of loading is that of
    the quantized model); embeddings, norms and the frozen kernels come out exact."""
    quantize_model(tiny, method="rtn")
    path = tmp_path / "q.safetensors"
    save_quantized(tiny, path)
    devices = []
    init = nn.Linear.reset_parameters

    def record(self):
        devices.append(self.weight.device.type)
        init(self)

    monkeypatch.setattr(nn.Linear, "reset_parameters", record)
    back = load_quantized(path, cache=False)
    assert devices and set(devices) == {"meta"}
    mine = dict(back.named_buffers())
    for k, v in tiny.named_buffers():  # the frozen kernels (not stored) included
        assert torch.equal(mine[k], v), k
    for k, v in tiny.named_parameters():
        assert torch.equal(back.get_parameter(k), v), k
    idx = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, tiny(idx).logits)


@pytest.mark.parametrize("width", [2, 3, 16, 48])
def test_pack_bits_in_row_chunks_match_a_bit_by_bit_reference(width, monkeypatch):
    """pack_bits and unpack_bits work a few rows at a time (their int64 bits are 64x
    the packed bytes): any chunk size gives the bytes of a plain bit-by-bit packing
    (LSB first) and back the codes."""
    from torch_ext.ops import codebook as cb

    g = torch.Generator().manual_seed(width)
    codes = torch.randint(0, 2 ** min(width, 62), (37, 11), generator=g, dtype=torch.int64)
    nb = -(-11 * width // 8)
    ref = torch.zeros((37, nb), dtype=torch.uint8)
    for r in range(37):
        bits = [(int(c) >> k) & 1 for c in codes[r] for k in range(width)]
        for i, bit in enumerate(bits):
            ref[r, i // 8] |= bit << (i % 8)
    for chunk in (1, nb * 5, 1 << 17):
        monkeypatch.setattr(cb, "_UNPACK_BYTES", chunk)
        packed = cb.pack_bits(codes, width)
        assert torch.equal(packed, ref), chunk
        assert torch.equal(cb.unpack_bits(packed, 11, width), codes), chunk


@pytest.mark.parametrize("method", ["rtn", "leech-shape-gain", "leech-ball", "e8"])
@pytest.mark.parametrize("group", ["row", "tensor", 48])
@pytest.mark.parametrize("feedback", ["none", "ldlq", "euclid"])
def test_quantize_matrix_row_chunks_change_nothing(method, group, feedback, monkeypatch):
    """quantize_matrix holds a chunk of rows in its temporaries: codes and scales are
    those of one chunk holding every row, for any chunk size (zero row, padding, H
    with and without feedback, two scale refits)."""
    from torch_ext.quantize import quantize_matrix
    from torch_ext.quantize import scales as sc

    rng = np.random.default_rng(7)
    W = rng.standard_normal((29, 100)) * 0.02
    W[3] = 0
    X = rng.standard_normal((300, 100))
    H = None if feedback == "euclid" else X.T @ X / 300
    fb = "none" if feedback == "euclid" else feedback
    kw = dict(method=method, bits=2, group=group, H=H, feedback=fb, scale_iters=2)
    monkeypatch.setattr(sc, "_CHUNK_WEIGHTS", 1 << 30)
    whole = quantize_matrix(W, **kw)
    for chunk in (1, 250):  # a row a chunk; a few rows a chunk (the last one shorter)
        monkeypatch.setattr(sc, "_CHUNK_WEIGHTS", chunk)
        part = quantize_matrix(W, **kw)
        assert np.array_equal(part.codes, whole.codes), chunk
        assert np.array_equal(part.scales, whole.scales), chunk
        assert part.mse == pytest.approx(whole.mse, rel=1e-12)


def test_quantize_model_progress_bar(capsys):
    from torch import nn

    from torch_ext.quantize import quantize_model

    net = nn.Sequential(nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))
    quantize_model(net, method="rtn", skip=(), progress=True)
    err = capsys.readouterr().err
    assert "quantizing layers" in err and "2/2" in err
    quantize_model(nn.Sequential(nn.Linear(24, 8)), method="rtn")
    assert capsys.readouterr().err == ""                    # nothing printed unless asked
    with pytest.raises(TypeError, match="progress must be a bool"):
        quantize_model(nn.Sequential(nn.Linear(24, 8)), method="rtn", progress="yes")
