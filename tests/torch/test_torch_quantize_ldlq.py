"""torch_ext.quantize: LDLQ feedback, Hadamard rotations, the held-out guard, calibration errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_ext.quantize import (
    METHODS,
    LeechQuantizedLinear,
    load_quantized,
    model_bits_report,
    quantize_model,
    save_quantized,
)
from torch_ext.quantize.feedback import (
    act_order,
    damped_hessian,
    inverse_cholesky_upper,
    ldlq,
    proxy_loss,
)
from torch_ext.quantize.rotation import LayerRotation, layer_seeds, plan_rotation

FAST = dict(max_points=64)


def _correlated(n, rows=4000, seed=0):
    """Inputs with correlated coordinates of very different energies, and their H."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = A * torch.exp(torch.randn(n, generator=g, dtype=torch.float64))[None, :]
    X = torch.randn(rows, n, generator=g, dtype=torch.float64) @ A
    return X, X.T @ X / rows


def _linear(in_f, out_f, seed=0, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f) * 0.05)
    return lin


# --------------------------------------------------------------------------- feedback


def _obs_reference(W, H, quantize_block, block, damp):
    """Block feedback through the inverse Hessian and its Schur complements (OBS form).

    After block B is quantized, the remaining columns move by
    ``-(W_B - Q_B) [H⁻¹]_BB⁻¹ [H⁻¹]_{B,rest}`` and ``H⁻¹`` of the remaining columns
    becomes the Schur complement; no Cholesky factor is used.
    """
    Hd, _ = damped_hessian(H, damp)
    Hinv = np.linalg.inv(Hd)
    W = W.copy()
    n = W.shape[1]
    Q = np.zeros_like(W)
    for j in range(n // block):
        a, b = j * block, (j + 1) * block
        Q[:, a:b] = quantize_block(j, W[:, a:b].copy())
        Hi = Hinv[a:, a:]  # inverse Hessian of the columns from a on
        k = b - a
        E = np.linalg.solve(Hi[:k, :k], (W[:, a:b] - Q[:, a:b]).T).T
        W[:, b:] -= E @ Hi[:k, k:]
        Hinv[b:, b:] = Hi[k:, k:] - Hi[k:, :k] @ np.linalg.solve(Hi[:k, :k], Hi[:k, k:])
    return Q


@pytest.mark.parametrize("block", [1, 3, 8])
def test_ldlq_equals_the_inverse_hessian_form(block):
    rng = np.random.default_rng(block)
    X = rng.standard_normal((500, 24)) @ rng.standard_normal((24, 24))
    H = X.T @ X / len(X)
    W = rng.standard_normal((6, 24))

    def q(j, Wj):
        return np.round(Wj * 3) / 3

    Q, info = ldlq(W, H, q, block=block, damp=0.01)
    assert np.array_equal(Q, _obs_reference(W, H, q, block, 0.01))
    assert (info.damp, info.raised, info.dead) == (0.01, 0, 0)
    assert proxy_loss(W, Q, H) < proxy_loss(W, q(0, W), H)


def test_damping_is_raised_and_reported_never_a_crash():
    H = np.array([[1.0, 2.0], [2.0, 1.0]])  # indefinite: eigenvalues 3 and -1
    U, info = inverse_cholesky_upper(H, 0.01)
    assert info.raised >= 2 and info.damp == pytest.approx(0.01 * 10**info.raised)
    Hd, _ = damped_hessian(H, info.damp)
    assert np.allclose(U.T @ U @ Hd, np.eye(2))
    # singular (rank one) and all-zero second moments factor at the requested damping
    for H in (np.ones((4, 4)), np.zeros((4, 4))):
        _, info = inverse_cholesky_upper(H, 0.01)
        assert info.raised == 0
    _, info = inverse_cholesky_upper(np.zeros((4, 4)), 0.01)
    assert info.dead == 4
    # damp=0 on a singular H: the first raise goes to a small non-zero damping
    _, info = inverse_cholesky_upper(np.ones((3, 3)), 0.0)
    assert info.raised >= 1 and 0 < info.damp < 1e-3


def test_dead_inputs_are_decoupled():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    X[:, [2, 5]] = 0.0  # never active
    H = X.T @ X / len(X)
    Hd, dead = damped_hessian(H, 0.01)
    assert dead.tolist() == [i in (2, 5) for i in range(8)]
    assert Hd[2, 2] == pytest.approx(np.diag(H)[~dead].mean() * 1.01)
    assert not Hd[2, [0, 1, 3, 4, 5, 6, 7]].any()
    W = rng.standard_normal((4, 8))
    Q, info = ldlq(W, H, lambda j, Wj: np.round(Wj), block=1)
    assert info.dead == 2
    assert np.array_equal(Q[:, [2, 5]], np.round(W[:, [2, 5]]))  # no feedback reaches them


def test_feedback_bad_arguments():
    H = np.eye(4)
    W = np.zeros((2, 4))
    with pytest.raises(ValueError, match="multiple of block"):
        ldlq(W, H, lambda j, Wj: Wj, block=3)
    with pytest.raises(ValueError, match="H must be at most"):
        ldlq(W, np.eye(5), lambda j, Wj: Wj, block=1)
    with pytest.raises(ValueError, match="H must be a square"):
        ldlq(W, np.ones((4, 3)), lambda j, Wj: Wj, block=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        ldlq(W, np.full((4, 4), np.nan), lambda j, Wj: Wj, block=1)
    with pytest.raises(ValueError, match="damp"):
        ldlq(W, H, lambda j, Wj: Wj, block=1, damp=-1)
    with pytest.raises(ValueError, match="returned shape"):
        ldlq(W, H, lambda j, Wj: Wj[:1], block=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rotation", ["none", "hadamard"])
def test_ldlq_lowers_the_proxy_loss_for_every_method(method, rotation):
    lin = _linear(96, 32)
    _, H = _correlated(96)
    W = lin.weight.detach().double()
    kw = dict(rotation=rotation, name="layer", **FAST)
    plain = LeechQuantizedLinear.from_linear(lin, method, **kw)
    fb = LeechQuantizedLinear.from_linear(lin, method, hessian=H, feedback="ldlq", **kw)

    def loss(q):
        return proxy_loss(W.numpy(), q.dequantize(torch.float64).numpy(), H.numpy())

    assert loss(fb) < 0.95 * loss(plain)
    assert fb.stats["feedback"] == "ldlq" and fb.stats["damp"] == 0.01
    assert fb.stats["damp_raised"] == 0 and fb.stats["notes"] == []
    assert fb.bits_report() == plain.bits_report()  # feedback costs no bits


def test_feedback_with_a_singular_hessian_and_dead_inputs():
    lin = _linear(48, 8)
    X = torch.randn(10, 48, dtype=torch.float64)  # 10 tokens: rank 10 of 48
    X[:, :5] = 0.0
    H = X.T @ X / 10
    q = LeechQuantizedLinear.from_linear(lin, "leech-ball", hessian=H, feedback="ldlq", **FAST)
    assert q.stats["dead_inputs"] == 5 and q.stats["damp_raised"] == 0
    assert bool(torch.isfinite(q.dequantize()).all())
    with pytest.raises(ValueError, match="needs hessian"):
        LeechQuantizedLinear.from_linear(lin, "rtn", feedback="ldlq")
    with pytest.raises(ValueError, match="feedback must be one of"):
        LeechQuantizedLinear.from_linear(lin, "rtn", feedback="gptq")


# --------------------------------------------------------------------------- rotations


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rotation", ["hadamard", "hadamard-both"])
def test_rotated_layer_output_equals_the_dense_dequantized_weight(method, rotation):
    lin = _linear(72, 48).double()
    q = LeechQuantizedLinear.from_linear(lin, method, rotation=rotation, seed=3, name="l", **FAST)
    assert q.rotation.kind == rotation and q.config["rotation"] == rotation
    x = torch.randn(5, 72, dtype=torch.float64)
    W = q.dequantize(torch.float64)
    assert torch.allclose(q(x), F.linear(x, W, q.bias), atol=1e-12)
    # the stored weight is the rotated one: rotating dequantize() back gives it exactly
    R = LayerRotation(rotation, 72, 48, layer_seeds(3, "l"))
    assert torch.allclose(R.rotate_weight(W), q._stored_weight(torch.float64), atol=1e-12)
    # weight error is basis-free: the stored layer's MSE is the MSE in the original basis
    err = float(((W - lin.weight.detach()) ** 2).mean())
    assert err == pytest.approx(q.stats["mse"], rel=1e-9)


def test_rotation_inverts_exactly_with_dense_matrices():
    R = LayerRotation("hadamard-both", 96, 40, seeds=(1, 2))
    Tin, Tout = R.t_in.matrix(), R.t_out.matrix()
    W = torch.randn(40, 96, dtype=torch.float64)
    assert torch.allclose(R.rotate_weight(W), Tout @ W @ Tin.T, atol=1e-12)
    assert torch.allclose(R.unrotate_weight(R.rotate_weight(W)), W, atol=1e-12)
    H = torch.randn(96, 96, dtype=torch.float64)
    H = H @ H.T
    assert torch.allclose(R.rotate_hessian(H), Tin @ H @ Tin.T, atol=1e-9)
    x = torch.randn(3, 96, dtype=torch.float64)
    y = F.linear(R.inputs(x), R.rotate_weight(W))
    assert torch.allclose(R.outputs(y), x @ W.T, atol=1e-12)


def test_rotation_seeds_per_layer_and_fallback_sizes():
    assert layer_seeds(0, "a") != layer_seeds(0, "b") != layer_seeds(1, "a")
    assert all(0 <= s < 2**31 for s in layer_seeds(7, "x"))
    assert plan_rotation("hadamard", 1031, 8)[0] == "none"
    assert plan_rotation("hadamard-both", 24, 1031) == (
        "hadamard", "rotation: out_features 1031 has odd part 1031 > 1023, input side only")
    q = LeechQuantizedLinear.from_linear(_linear(1031, 2), "rtn", rotation="hadamard")
    assert q.rotation.kind == "none" and "odd part 1031" in q.stats["notes"][0]
    with pytest.raises(ValueError, match="rotation must be one of"):
        LeechQuantizedLinear.from_linear(_linear(24, 2), "rtn", rotation="random")
    with pytest.raises(ValueError, match="odd part"):
        LeechQuantizedLinear(1031, 2, rotation="hadamard")


def test_rotation_round_trips_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 8))
    quantize_model(net, method="leech-shape-gain", rotation="hadamard-both", seed=5, skip=(), **FAST)
    path = tmp_path / "rot.safetensors"
    save_quantized(net, path)
    back = load_quantized(path, model=nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 8)))
    assert back[0].rotation.kind == "hadamard-both"
    assert back[0].rotation.seeds == net[0].rotation.seeds == layer_seeds(5, "0")
    assert back[0].config == net[0].config
    x = torch.randn(3, 48)
    assert torch.equal(back(x), net(x))


def test_old_configs_load_without_rotation():
    cfg = LeechQuantizedLinear.from_linear(_linear(24, 4), "rtn").config
    for k in ("rotation", "rotation_seeds"):
        cfg.pop(k)
    assert LeechQuantizedLinear.from_config(cfg).rotation.kind == "none"


# --------------------------------------------------------------------------- calibration


class _Net(nn.Module):
    """Two layers declared in the reverse of the order they are called."""

    def __init__(self, d=48):
        super().__init__()
        self.second = nn.Linear(d, d)
        self.first = nn.Linear(d, d)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_layers_are_calibrated_in_call_order_on_the_quantized_model():
    torch.manual_seed(0)
    net = _Net()
    data = [torch.randn(16, 48) for _ in range(4)]
    seen = []
    net.second.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    order = []
    quantize_model(net, method="rtn", data=data, callback=lambda n, i: order.append((n, i)))
    assert [n for n, _ in order] == ["first", "second"]
    assert [i["index"] for _, i in order] == [0, 1]
    # the inputs that calibrated 'second' came through the quantized 'first'
    x = data[0]
    with torch.no_grad():
        want = torch.relu(net.first(x))
    assert any(torch.allclose(s, want) for s in seen)
    assert all(i["calibration"] in ("kept", "rejected") for _, i in order)
    assert all(i["feedback"] == ("ldlq" if i["calibration"] == "kept" else "none") for _, i in order)


def test_layers_sharing_an_input_share_one_pass():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(24, 24), nn.Linear(24, 24), nn.Linear(24, 24)
            self.o = nn.Linear(24, 24)

        def forward(self, x):
            a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1)
            return self.o(a @ self.v(x))

    torch.manual_seed(0)
    net = Attn()
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append(1))
    quantize_model(net, method="rtn", data=[torch.randn(2, 6, 24) for _ in range(4)])
    assert len(calls) == 1 + 2 * 4  # the probe, then (q, k, v) and (o), 4 batches each


def test_the_guard_keeps_the_uncalibrated_layer_when_calibration_hurts():
    """Fit batches excite the first 6 inputs only, the held-out batch the others: the
    feedback pushes the error into the inputs the fit batches never see, which the
    held-out batch uses."""
    torch.manual_seed(0)
    lin = _linear(48, 32)
    fit = torch.zeros(64, 48)
    fit[:, :6] = torch.randn(64, 6) * 10
    fit[:, 6:] = torch.randn(64, 42) * 1e-3
    val = torch.randn(64, 48)
    data = [fit, fit.flip(0), fit * 0.5, val]  # batch 3 is held out
    infos = {}
    net = nn.Sequential(lin)
    quantize_model(net, method="leech-ball", data=data, rotation="none", skip=(),
                   callback=lambda n, i: infos.update({n: i}), **FAST)
    info = infos["0"]
    assert info["calibration"] == "rejected"
    assert info["val_error"]["calibrated"] > info["val_error"]["plain"]
    plain = LeechQuantizedLinear.from_linear(lin, "leech-ball", rotation="none", name="0", **FAST)
    assert torch.equal(net[0].packed, plain.packed) and torch.equal(net[0].scales, plain.scales)
    # the same layer with held-out data like the fit data keeps its calibration
    X, _ = _correlated(48, rows=256)
    data = [X[i::4].float() for i in range(4)]
    net = nn.Sequential(_linear(48, 32))
    quantize_model(net, method="leech-ball", data=data, rotation="none", skip=(),
                   callback=lambda n, i: infos.update({n: i}), **FAST)
    assert infos["0"]["calibration"] == "kept"
    assert infos["0"]["val_error"]["calibrated"] < infos["0"]["val_error"]["plain"]


def _sink_batch(seed, n=64, d=96):
    """ReLU-like inputs where every 16th token is a 'sink': one channel at 60, the rest ~0
    (the pattern of the [CLS] token at the MLP down-projections of pretrained BERTs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(n, d, generator=g)) * 0.5
    x[::16] = 0.01 * torch.randn(len(x[::16]), d, generator=g)
    x[::16, 7] = 60.0
    return x


@pytest.mark.parametrize("feedback", ["none", "ldlq"])
def test_the_guard_is_not_fooled_by_massive_activation_tokens(feedback):
    """Calibrating on such inputs cuts the sink tokens' error and raises every other
    token's; the plain held-out proxy tr(ΔW H ΔWᵀ) prefers that, the guard does not."""
    torch.manual_seed(0)
    lin = _linear(96, 48)
    data = [_sink_batch(i) for i in range(8)]
    infos = {}
    net = nn.Sequential(lin)
    quantize_model(net, method="rtn", data=data, rotation="none", feedback=feedback, skip=(),
                   callback=lambda n, i: infos.update({n: i}))
    assert infos["0"]["calibration"] == "rejected"
    # what the plain proxy would have said, and what ordinary tokens get
    Xf = torch.cat([data[i] for i in (0, 1, 2, 4, 5, 6)]).double()
    Xv = torch.cat([data[3], data[7]]).double()
    Hf, Hv = Xf.T @ Xf / len(Xf), Xv.T @ Xv / len(Xv)
    W = lin.weight.detach().double()
    cal = LeechQuantizedLinear.from_linear(lin, "rtn", hessian=Hf, feedback=feedback)
    plain = LeechQuantizedLinear.from_linear(lin, "rtn")
    ordinary = torch.ones(len(Xv), dtype=torch.bool)
    ordinary[::16] = False

    def errs(q):
        D = q.dequantize(torch.float64) - W
        return float(((D @ Hv) * D).sum()), float(((Xv[ordinary] @ D.T) ** 2).sum(1).mean())

    (proxy_cal, ord_cal), (proxy_plain, ord_plain) = errs(cal), errs(plain)
    assert proxy_cal < 0.5 * proxy_plain  # the plain proxy would keep the calibration
    assert ord_cal > 1.5 * ord_plain  # which nearly doubles the error of ordinary tokens
    assert torch.equal(net[0].packed, plain.packed)


def test_data_forms_tensor_tuples_dicts_and_dataloader():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(24, 8)

        def forward(self, x, scale=1.0):
            return self.a(x * scale)

    torch.manual_seed(0)
    xs = torch.randn(32, 24)
    for data in (xs, [(xs[i:i + 8], 2.0) for i in range(0, 32, 8)],
                 [{"x": xs[i:i + 8], "scale": 0.5} for i in range(0, 32, 8)],
                 torch.utils.data.DataLoader(xs, batch_size=8)):
        net = Two()
        quantize_model(net, method="rtn", data=data, skip=())
        assert isinstance(net.a, LeechQuantizedLinear) and net.a.stats["calibration"] != "none"
    # one batch of one row: held out by token
    net = Two()
    quantize_model(net, method="rtn", data=[xs[:1].expand(16, 24).clone()], skip=())
    net = Two()
    quantize_model(net, method="rtn", data=xs[:1], skip=())
    assert net.a.stats["calibration"] == "none" or "val_error" in net.a.stats


def test_calibration_errors_are_clear():
    torch.manual_seed(0)

    def net():
        return nn.Sequential(nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))

    with pytest.raises(ValueError, match=r"calibration batch 1 \(tensor torch.float32 \(4, 23\)\)"):
        quantize_model(net(), method="rtn", data=[torch.randn(4, 24), torch.randn(4, 23)])
    with pytest.raises(ValueError, match="calibration batch 0.*Long"):
        quantize_model(net(), method="rtn", data=[torch.ones(4, 24, dtype=torch.long)])
    bad = torch.randn(4, 24)
    bad[1, 3] = float("inf")
    with pytest.raises(ValueError, match="layer '0': its inputs contain NaN or inf"):
        quantize_model(net(), method="rtn", data=[torch.randn(4, 24), bad])
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_model(net(), method="rtn", feedback="ldlq")
    with pytest.raises(ValueError, match="feedback must be one of"):
        quantize_model(net(), method="rtn", feedback="gptq", data=[torch.randn(4, 24)])
    with pytest.raises(ValueError, match="rotation must be one of"):
        quantize_model(net(), method="rtn", rotation="dense")
    with pytest.raises(TypeError, match="data must be a tensor"):
        quantize_model(net(), method="rtn", data="some text")
    with pytest.raises(ValueError, match="no calibration batch"):
        quantize_model(net(), method="rtn", data=[])
    with pytest.raises(ValueError, match="damp"):
        quantize_model(net(), method="rtn", damp=-0.1)
    with torch.device("meta"):
        meta = net()
    with pytest.raises(ValueError, match="meta device"):
        quantize_model(meta, method="rtn")
    # nothing was replaced by a failed call
    m = net()
    with pytest.raises(ValueError):
        quantize_model(m, method="rtn", data=[torch.randn(4, 23)])
    assert not any(isinstance(x, LeechQuantizedLinear) for x in m.modules())


def test_bits_report_lists_rotation_calibration_times_and_notes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(48, 1031), nn.ReLU(), nn.Linear(1031, 8))
    quantize_model(net, method="rtn", rotation="hadamard-both", skip=(),
                   data=[torch.randn(8, 48) for _ in range(4)])
    r = model_bits_report(net)
    assert [(x["rotation"], x["calibration"]) for x in r.layers][0][0] == "hadamard"
    assert r.layers[1]["rotation"] == "none"
    assert all(x["seconds"] > 0 for x in r.layers)
    assert any("out_features 1031" in n for n in r.notes) and any("in_features 1031" in n for n in r.notes)
    text = r.table()
    assert "note: 0: rotation: out_features 1031" in text
    head = text.splitlines()[0].split()
    assert head[-3:] == ["rotation", "calibration", "seconds"]


# --------------------------------------------------------------------------- Hugging Face models


def _hf_models():
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=96, max_position_embeddings=64))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=100, n_embd=48, n_layer=2, n_head=2, n_positions=64))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=96, max_position_embeddings=64))
    return {"bert": bert, "gpt2": gpt2, "llama": llama}


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_tiny_transformers_models_quantize_run_save_and_reload(arch, tmp_path):
    torch.manual_seed(0)
    model = _hf_models()[arch].eval()
    fresh = type(model)(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(0, 100, (8, 12))
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0  # padded tails: left out of the second moments
    data = [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2]} for i in range(0, 8, 2)]
    infos = []
    quantize_model(model, method="leech-shape-gain", data=data,
                   callback=lambda n, i: infos.append(n), **FAST)
    n_linear = sum(1 for n, m in fresh.named_modules()
                   if (type(m) is nn.Linear or type(m).__name__ == "Conv1D") and "lm_head" not in n
                   and "pooler" not in n)
    # BERT: 6 a layer (the pooler skipped); GPT-2: 4 Conv1D a layer; Llama: 7 a layer (lm_head skipped)
    assert len(infos) == n_linear == {"bert": 12, "gpt2": 8, "llama": 14}[arch]
    assert len(set(infos)) == n_linear
    with torch.no_grad():
        out = model(input_ids=ids[:2])
    first = out.last_hidden_state if arch == "bert" else out.logits
    assert bool(torch.isfinite(first).all())
    path = tmp_path / f"{arch}.safetensors"
    save_quantized(model, path)
    back = load_quantized(path, model=fresh)
    with torch.no_grad():
        again = back(input_ids=ids[:2])
    assert torch.equal(first, again.last_hidden_state if arch == "bert" else again.logits)


# --------------------------------------------------------------------------- act-order


def test_act_order_feeds_the_blocks_in_the_given_order():
    rng = np.random.default_rng(3)
    H = _correlated(48)[1].numpy()
    W = rng.standard_normal((5, 48))

    def q(j, Wj):
        return np.round(Wj * 2) / 2

    Q0, _ = ldlq(W, H, q, block=8)
    np.testing.assert_array_equal(ldlq(W, H, q, block=8, order=np.arange(6))[0], Q0)
    order = act_order(H, 8)
    d = np.diag(H).reshape(6, 8).sum(1)
    assert np.all(np.diff(d[order]) <= 0) and sorted(order.tolist()) == list(range(6))
    seen = []
    Qa, _ = ldlq(W, H, lambda j, Wj: (seen.append(j), q(j, Wj))[1], block=8, order=order)
    assert seen == order.tolist()  # each block once, with its own index, in that order
    cols = (order[:, None] * 8 + np.arange(8)).reshape(-1)
    ref = _obs_reference(W[:, cols], H[np.ix_(cols, cols)], q, 8, 0.01)
    np.testing.assert_allclose(Qa[:, cols], ref, atol=1e-9)
    assert not np.array_equal(Qa, Q0)  # the order matters when inputs are coupled
    # uncoupled inputs (diagonal H): every order gives the same weights
    D = np.diag(np.diag(H))
    np.testing.assert_array_equal(ldlq(W, D, q, block=8, order=order[::-1].copy())[0],
                                  ldlq(W, D, q, block=8)[0])
    for bad in ([0, 1], np.arange(1, 7), np.array([0, 0, 1, 2, 3, 4]), np.arange(6.0)):
        with pytest.raises(ValueError, match="order"):
            ldlq(W, H, q, block=8, order=bad)
    with pytest.raises(ValueError, match="block"):
        act_order(H, 5)


@pytest.mark.parametrize("method", ["rtn", "leech-shape-gain"])
def test_act_order_through_the_layer_and_quantize_model(method):
    lin = _linear(96, 32)
    X, H = _correlated(96)
    W = lin.weight.detach().double().numpy()
    kw = dict(rotation="none", name="layer", hessian=H, feedback="ldlq", **FAST)
    ao = LeechQuantizedLinear.from_linear(lin, method, act_order=True, **kw)
    fb = LeechQuantizedLinear.from_linear(lin, method, **kw)
    plain = LeechQuantizedLinear.from_linear(lin, method, rotation="none", name="layer", **FAST)

    def loss(q):
        return proxy_loss(W, q.dequantize(torch.float64).numpy(), H.numpy())

    assert ao.stats["act_order"] is True and fb.stats["act_order"] is False
    assert loss(ao) < 0.95 * loss(plain)
    assert ao.bits_report() == fb.bits_report()  # same layout and file, another order
    x = X[:7].float()
    torch.testing.assert_close(ao(x), F.linear(x, ao.dequantize(torch.float32), ao.bias))
    model = nn.Sequential(_linear(96, 32))
    data = [X[i:i + 250].float() for i in range(0, 2000, 250)]
    quantize_model(model, 2, method, data=data, rotation="hadamard", act_order=True, **FAST)
    assert torch.isfinite(model(x)).all()
    with pytest.raises(TypeError, match="act_order"):
        quantize_model(nn.Sequential(_linear(96, 32)), 2, method, act_order=1)
    with pytest.raises(TypeError, match="act_order"):
        LeechQuantizedLinear.from_linear(lin, method, act_order="yes", **kw)


@pytest.mark.parametrize("splits", [[40], [10, 10, 10, 10], [3, 5, 8, 24], [16, 1, 23], [2, 2]])
def test_held_out_moment_kept_as_rows_or_sum_gives_the_same_loss(splits):
    """The held-out guard keeps the weighted rows while there are fewer than the
    inputs (46 MB instead of a 254 MB sum on a 5632-input layer) and their sum past
    that: tr(D H_val D^T) is the same either way, wherever the switch happens."""
    from torch_ext.quantize.calibrate import _HeldOut

    g = torch.Generator().manual_seed(len(splits))
    n = 16
    X = torch.randn(sum(splits), n, generator=g, dtype=torch.float64)
    D = torch.randn(5, n, generator=g, dtype=torch.float64)
    ref = float(((D @ (X.T @ X / X.shape[0])) * D).sum())
    h = _HeldOut()
    for part in torch.split(X, splits):
        h.add(part)
    h.finish()
    assert h.loss(D) == pytest.approx(ref, rel=1e-12)
    assert (h.H is None) == (X.shape[0] <= n)  # rows while they are fewer than the inputs


@pytest.mark.parametrize("n", [1, 3, 255, 256, 257, 600])
@pytest.mark.parametrize("kind", ["full", "low-rank", "dead", "asymmetric"])
def test_inverse_cholesky_in_place_equals_the_plain_lapack_route(n, kind, monkeypatch):
    """inverse_cholesky_upper builds J damped_hessian(H) J and flips the factor back in
    one n x n array: bit for bit the result of the plain route (a damped copy, a
    reversed Fortran copy, potrf, trtri, a contiguous reversed copy), for any tile,
    and with ``size`` that of the zero-padded H without the padded copy."""
    import scipy.linalg

    from torch_ext.quantize import feedback as fbk

    rng = np.random.default_rng(n)
    X = rng.standard_normal((max(1, n // 3) if kind == "low-rank" else n + 5, n))
    H = X.T @ X
    if kind == "dead":
        H[:, ::3] = 0
        H[::3, :] = 0
    if kind == "asymmetric":
        H = H + 1e-3 * rng.standard_normal((n, n))
    potrf, trtri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "trtri"), (np.empty(1),))
    for tile, pad in ((7, 0), (256, 0), (7, 5)):
        monkeypatch.setattr(fbk, "_TILE", tile)
        U, info = fbk.inverse_cholesky_upper(H, 0.01, size=n + pad)  # padding: dead inputs
        Hp = np.zeros((n + pad, n + pad))
        Hp[:n, :n] = H
        Hd, dead = fbk.damped_hessian(Hp, info.damp)
        A, ok = potrf(np.asfortranarray(Hd[::-1, ::-1]), lower=1, clean=1)
        A, ok2 = trtri(A, lower=1)
        assert ok == ok2 == 0
        assert U.flags.c_contiguous and np.array_equal(U, A[::-1, ::-1]), tile
        assert info.dead == int(dead.sum())


@pytest.mark.parametrize("order", [None, [2, 0, 1]])
def test_ldlq_pads_a_smaller_hessian_with_dead_inputs(order):
    """H smaller than W's columns is H zero-padded (padding columns are dead inputs),
    without the padded copy: the same quantized weight, bit for bit."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((5, 6))
    X = rng.standard_normal((50, 4))
    H = X.T @ X
    Hp = np.zeros((6, 6))
    Hp[:4, :4] = H
    q = lambda j, Wj: np.round(Wj * 2) / 2  # noqa: E731
    Q1, i1 = ldlq(W, H, q, block=2, order=order)
    Q2, i2 = ldlq(W, Hp, q, block=2, order=order)
    assert np.array_equal(Q1, Q2) and i1 == i2 and i1.dead == 2


@pytest.mark.parametrize("n", [24, 96, 300, 5632 // 8])
def test_rotate_hessian_in_place_equals_the_copying_rotation(n, monkeypatch):
    """rotate_hessian(overwrite=True) rotates H in its own memory (rows, a tiled
    transpose, rows): bit for bit the copying rotation, for any tile; a tensor it
    cannot use in place (non-contiguous; an odd part above the native kernel's, as
    300 = 4 x 75) is rotated by a copy."""
    from torch_ext.quantize import feedback as fbk
    from torch_ext.quantize import rotation as rot
    from torch_ext.quantize.hadamard import NATIVE_MAX_ODD

    r = rot.LayerRotation("hadamard", n, 8, seeds=(3, 0))
    g = torch.Generator().manual_seed(n)
    X = torch.randn(2 * n, n, generator=g, dtype=torch.float64)
    H = X.T @ X
    ref = r.rotate_hessian(H.clone())
    for tile in (7, 256):
        monkeypatch.setattr(fbk, "_TILE", tile)
        Hc = H.clone()
        out = r.rotate_hessian(Hc, overwrite=True)
        in_place = r.t_in.odd <= NATIVE_MAX_ODD
        assert (out.data_ptr() == Hc.data_ptr()) == in_place and torch.equal(out, ref), tile
    T = H.clone().T  # not contiguous: rotated by a copy, the input kept
    assert torch.equal(r.rotate_hessian(T, overwrite=True), r.rotate_hessian(T.contiguous()))
    assert torch.equal(T, H.T)


def test_from_linear_overwrite_hessian_gives_the_same_layer():
    """overwrite_hessian lets the rotation work in the moment's memory; the quantized
    layer is bit for bit the one of the default (the moment is then rotated)."""
    from torch_ext.quantize import LeechQuantizedLinear, QuantizeConfig

    torch.manual_seed(0)
    lin = nn.Linear(96, 16)
    X = torch.randn(400, 96, dtype=torch.float64)
    H = X.T @ X / 400
    cfg = QuantizeConfig(method="leech-shape-gain", bits=2, rotation="hadamard")
    a = LeechQuantizedLinear.from_linear(lin, cfg, hessian=H.clone(), name="l")
    Hc = H.clone()
    b = LeechQuantizedLinear.from_linear(lin, cfg, hessian=Hc, name="l", overwrite_hessian=True)
    assert torch.equal(a.packed, b.packed) and torch.equal(a.scales, b.scales)
    assert not torch.equal(Hc, H)  # rotated in place
