"""torch_ext.quantize: QuantizeConfig, the public per-matrix step, the calibration plan."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from torch_ext.quantize import (
    METHODS,
    BlockLayout,
    LeechQuantizedLinear,
    QuantizeConfig,
    QuantizedMatrix,
    quantize_matrix,
    quantize_model,
)
from torch_ext.quantize.calibrate import CalibrationPlan

FAST = dict(max_points=64)


def _linear(in_f, out_f, seed=0, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f) * torch.linspace(0.02, 0.2, out_f)[:, None])
    return lin


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 72), nn.ReLU(), nn.Linear(72, 30), nn.ReLU(), nn.Linear(30, 8))


def _data(seed=1, n=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 48, generator=g) for _ in range(n)]


def _layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, LeechQuantizedLinear)}


def _same_layers(a, b):
    la, lb = _layers(a), _layers(b)
    assert la.keys() == lb.keys() and la
    for n in la:
        x, y = la[n], lb[n]
        assert torch.equal(x.packed, y.packed), n
        assert torch.equal(x.scales, y.scales) and x.scales.dtype == y.scales.dtype, n
        assert (x.gains is None) == (y.gains is None), n
        if x.gains is not None:
            assert torch.equal(x.gains, y.gains), n
        assert x.config == y.config, n
        sx = {k: v for k, v in x.stats.items() if "seconds" not in k}
        sy = {k: v for k, v in y.stats.items() if "seconds" not in k}
        assert repr(sx) == repr(sy), n


# --------------------------------------------------------------------------- the config


BAD = [
    (dict(method="gptq"), ValueError, r"unknown quantization method 'gptq': method must be one of"),
    (dict(method=3), ValueError, r"unknown quantization method 3"),
    (dict(method="rtn", bits=9), ValueError, r"bits must be in \[1, 8\], got 9"),
    (dict(method="rtn", bits="2"), TypeError, r"bits must be an int"),
    (dict(method="e8", bits=0.5), ValueError, r"too small for the E8 ball"),
    (dict(method="leech-ball", bits=3), ValueError, r"leech-ball supports bits from .* got bits=3"),
    (dict(group="col"), ValueError, r"group must be 'row', 'tensor' or a positive int, got 'col'"),
    (dict(method="leech-ball", group=16), ValueError, r"multiple of the block length 24, got 16"),
    (dict(group=2.5), TypeError, r"group must be 'row', 'tensor' or a positive int, got float"),
    (dict(group=True), TypeError, r"group must be .* got bool"),
    (dict(rotation="dense"), ValueError, r"rotation must be one of"),
    (dict(feedback="gptq"), ValueError, r"feedback must be one of \('none', 'ldlq'\), got 'gptq'"),
    (dict(seed=-1), ValueError, r"seed must be >= 0, got -1"),
    (dict(seed=1.5), TypeError, r"seed must be an int, got float"),
    (dict(damp=-0.1), ValueError, r"damp must be a number in \[0, 1e6\), got -0.1"),
    (dict(damp=float("nan")), ValueError, r"damp must be a number"),
    (dict(damp=True), ValueError, r"damp must be a number"),
    (dict(act_order=1), TypeError, r"act_order must be a bool, got int"),
    (dict(scale_iters=101), ValueError, r"scale_iters must be in \[0, 100\], got 101"),
    (dict(scale_iters=1.0), TypeError, r"scale_iters must be an int"),
    (dict(scale_dtype=torch.int8), ValueError, r"scale_dtype must be torch.float16"),
    (dict(scale_dtype="float16"), ValueError, r"scale_dtype must be torch.float16"),
    (dict(max_points=0), ValueError, r"max_points must be >= 1, got 0"),
    (dict(max_points="64"), TypeError, r"max_points must be an int"),
    (dict(skip=3), TypeError, r"skip must be an iterable of str patterns"),
    (dict(skip=["lm_head", 1]), TypeError, r"skip must be an iterable of str patterns"),
]


@pytest.mark.parametrize("kw, exc, match", BAD, ids=[f"{k}" for k, _, _ in BAD])
def test_config_errors_name_the_setting(kw, exc, match):
    with pytest.raises(exc, match=match) as info:
        QuantizeConfig(**kw)
    # the same error, type and message, through the keywords of the calls
    lin = _linear(24, 2)
    with pytest.raises(exc) as by_model:
        quantize_model(nn.Sequential(lin), **kw)
    assert str(by_model.value) == str(info.value)
    assert isinstance(lin, nn.Linear)
    if "skip" not in kw:
        with pytest.raises(exc) as by_layer:
            LeechQuantizedLinear.from_linear(lin, **kw)
        assert str(by_layer.value) == str(info.value)


def test_config_is_frozen_hashable_and_normalised():
    cfg = QuantizeConfig(method="rtn", group=np.int64(16), skip="head*", seed=np.int64(3), damp=0)
    assert (cfg.group, cfg.skip, cfg.seed, cfg.damp) == (16, ("head*",), 3, 0.0)
    assert type(cfg.group) is int and type(cfg.seed) is int and type(cfg.damp) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bits = 3
    assert QuantizeConfig(skip=["a", "b"]).skip == ("a", "b")
    assert hash(QuantizeConfig()) == hash(QuantizeConfig()) and QuantizeConfig() == QuantizeConfig()
    assert QuantizeConfig() != QuantizeConfig(seed=1)
    with pytest.raises(TypeError):
        QuantizeConfig("rtn")  # keywords only
    # replace validates the new config
    assert dataclasses.replace(cfg, bits=3).bits == 3
    with pytest.raises(ValueError, match="damp must be"):
        dataclasses.replace(cfg, damp=-1)
    assert "method='rtn'" in repr(cfg) and "scale_dtype=torch.float16" in repr(cfg)
    assert cfg.codec().name == "rtn" and cfg.codec().block == 1


def test_config_dict_round_trip():
    cfg = QuantizeConfig(method="leech-ball", group=48, rotation="hadamard-both", feedback="ldlq",
                         seed=7, damp=0.1, act_order=True, scale_iters=2,
                         scale_dtype=torch.bfloat16, max_points=100, skip=("head", "x.*"))
    d = cfg.to_dict()
    assert d["scale_dtype"] == "bfloat16" and d["skip"] == ["head", "x.*"]
    assert set(d) == {f.name for f in dataclasses.fields(QuantizeConfig)}
    assert QuantizeConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert QuantizeConfig.from_dict({}) == QuantizeConfig()
    assert QuantizeConfig.from_dict({"scale_dtype": torch.float32}).scale_dtype == torch.float32
    with pytest.raises(ValueError, match=r"not QuantizeConfig fields: \['calib_steps'\]"):
        QuantizeConfig.from_dict({**d, "calib_steps": 32})
    with pytest.raises(ValueError, match="scale_dtype must be one of"):
        QuantizeConfig.from_dict({"scale_dtype": "float8"})
    with pytest.raises(TypeError, match="d must be a mapping"):
        QuantizeConfig.from_dict([("method", "rtn")])
    with pytest.raises(ValueError, match="damp must be"):
        QuantizeConfig.from_dict({"damp": -1})


# --------------------------------------------------------------------------- config == keywords


@pytest.mark.parametrize("method", ["rtn", "leech-shape-gain"])
@pytest.mark.parametrize("calibrated", [False, True])
def test_config_and_keywords_give_the_same_layers(method, calibrated):
    kw = dict(group=24 if method == "rtn" else "row", rotation="hadamard-both", seed=5,
              damp=0.05, act_order=calibrated, scale_iters=2, skip=("4",), **FAST)
    data = dict(data=_data()) if calibrated else {}
    by_kw, by_pos, by_cfg = _net(), _net(), _net()
    quantize_model(by_kw, bits=2, method=method, **kw, **data)
    quantize_model(by_pos, 2, method, **kw, **data)
    quantize_model(by_cfg, QuantizeConfig(method=method, bits=2, **kw), **data)
    _same_layers(by_kw, by_cfg)
    _same_layers(by_pos, by_cfg)
    assert set(_layers(by_cfg)) == {"0", "2"}  # "4" skipped


@pytest.mark.parametrize("method", ["rtn", "leech-shape-gain"])
def test_from_linear_config_equals_keywords(method):
    lin = _linear(72, 16)
    g = torch.Generator().manual_seed(2)
    X = torch.randn(300, 72, generator=g, dtype=torch.float64)
    H = X.T @ X / 300
    for kw, extra in [(dict(), {}), (dict(rotation="hadamard", seed=2, group="tensor"), {}),
                      (dict(feedback="ldlq", act_order=True), {"hessian": H})]:
        a = LeechQuantizedLinear.from_linear(lin, method, **kw, **FAST, **extra, name="l")
        b = LeechQuantizedLinear.from_linear(lin, method, 2, **kw, **FAST, **extra, name="l")
        # from_linear's own defaults without a config: no rotation, no feedback
        cfg = QuantizeConfig(method=method, **{"rotation": "none", "feedback": "none", **kw}, **FAST)
        c = LeechQuantizedLinear.from_linear(lin, cfg, **extra, name="l")
        _same_layers(nn.Sequential(a), nn.Sequential(c))
        _same_layers(nn.Sequential(b), nn.Sequential(c))


def test_from_linear_defaults_with_and_without_a_config():
    lin = _linear(48, 8)
    X = torch.randn(200, 48, dtype=torch.float64)
    H = X.T @ X / 200
    assert LeechQuantizedLinear.from_linear(lin, "rtn").rotation.kind == "none"
    q = LeechQuantizedLinear.from_linear(lin, QuantizeConfig(method="rtn"), name="x")
    assert q.rotation.kind == "hadamard" and q.stats["feedback"] == "none"
    # feedback=None (the config's default): LDLQ with a hessian
    q = LeechQuantizedLinear.from_linear(lin, QuantizeConfig(method="rtn"), hessian=H)
    assert q.stats["feedback"] == "ldlq"
    # keywords keep feedback="none" with a hessian: the weighted refit only
    q = LeechQuantizedLinear.from_linear(lin, "rtn", hessian=H)
    assert q.stats["feedback"] == "none"
    with pytest.raises(ValueError, match="needs hessian"):
        LeechQuantizedLinear.from_linear(lin, QuantizeConfig(method="rtn", feedback="ldlq"))


def test_a_config_and_a_setting_keyword_is_a_type_error_naming_it():
    cfg = QuantizeConfig(method="rtn")
    net = _net()
    for kw in (dict(method="rtn"), dict(damp=0.01), dict(skip=())):
        name = next(iter(kw))
        with pytest.raises(TypeError, match=rf"quantize_model\(\) got both a QuantizeConfig and {name}="):
            quantize_model(net, cfg, **kw)
    with pytest.raises(TypeError, match="got a QuantizeConfig and 1 more positional"):
        quantize_model(net, cfg, "rtn")
    with pytest.raises(TypeError, match=r"from_linear\(\) got both a QuantizeConfig and group="):
        LeechQuantizedLinear.from_linear(_linear(24, 2), cfg, group=24)
    with pytest.raises(TypeError, match=r"quantize_matrix\(\) got both a QuantizeConfig and bits="):
        quantize_matrix(np.ones((2, 24)), cfg, bits=3)
    # the old calling conventions' own mistakes stay TypeErrors
    with pytest.raises(TypeError, match="multiple values for argument 'bits'"):
        quantize_model(net, 2, bits=2)
    with pytest.raises(TypeError, match="multiple values for argument 'method'"):
        LeechQuantizedLinear.from_linear(_linear(24, 2), "rtn", method="rtn")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        quantize_model(net, colour="red")
    with pytest.raises(TypeError, match="unexpected keyword argument 'skip'"):
        LeechQuantizedLinear.from_linear(_linear(24, 2), "rtn", skip=())
    with pytest.raises(TypeError, match="at most 2 positional settings"):
        quantize_model(net, 2, "rtn", ("lm_head",))
    with pytest.raises(TypeError, match=r"QuantizeConfig.from_dict"):
        quantize_model(net, {"method": "rtn"})
    assert not _layers(net)  # nothing was replaced
    # per-call arguments go with a config
    quantize_model(net, cfg, workers=1, cache=False, data=_data())
    assert all(not m.cache for m in _layers(net).values())


# --------------------------------------------------------------------------- quantize_matrix


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("calibrated", [False, True])
def test_quantize_matrix_is_the_layer_s_step(method, calibrated):
    lin = _linear(50, 6)
    extra = {}
    if calibrated:
        X = torch.randn(200, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        extra = {"hessian": X.T @ X / 200}
    cfg = QuantizeConfig(method=method, rotation="none", group=48 if method != "rtn" else 16, **FAST)
    q = LeechQuantizedLinear.from_linear(lin, cfg, **extra)
    r = quantize_matrix(lin.weight, cfg, H=extra.get("hessian"))  # a torch float32 matrix
    assert isinstance(r, QuantizedMatrix) and r.layout == q.layout
    np.testing.assert_array_equal(r.codes, q.codes().numpy())
    np.testing.assert_array_equal(r.scales, q.scales.double().numpy())
    assert r.scale_dtype == q.scales.dtype
    if q.gains is None:
        assert r.gains is None
    else:
        np.testing.assert_array_equal(np.float32(r.gains), q.gains.numpy())
    assert r.mse == q.stats["mse"]
    assert (r.feedback_info is not None) == calibrated == (q.stats["feedback"] == "ldlq")
    # the same weights, up to the layer's float32 gains
    np.testing.assert_allclose(r.dequantize(), q.dequantize(torch.float64).numpy(), rtol=1e-6,
                               atol=1e-12)
    # numpy float64 in: the same result
    again = quantize_matrix(lin.weight.detach().double().numpy(), cfg, H=extra.get("hessian"))
    np.testing.assert_array_equal(again.codes, r.codes)
    assert f"QuantizedMatrix(6x50, method={method!r}" in repr(r)


def test_quantize_matrix_keywords_and_errors():
    W = np.random.default_rng(0).standard_normal((4, 30))
    a = quantize_matrix(W, method="rtn", bits=3, group=10)
    b = quantize_matrix(W, QuantizeConfig(method="rtn", bits=3, group=10))
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.codes.max() == 7 and a.scales.shape == (4, 3)
    with pytest.raises(TypeError, match="W must be a floating-point matrix"):
        quantize_matrix(np.ones((2, 24), dtype=np.int64))
    with pytest.raises(TypeError, match="W must be a floating-point matrix"):
        quantize_matrix(torch.ones(2, 24, dtype=torch.long))
    with pytest.raises(TypeError, match="W must be a floating-point matrix"):
        quantize_matrix("weights")
    with pytest.raises(ValueError, match="W must be a non-empty 2-D matrix"):
        quantize_matrix(np.ones(24))
    with pytest.raises(ValueError, match="W must be a non-empty 2-D matrix"):
        quantize_matrix(np.ones((0, 24)))
    bad = W.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="W contains NaN or inf"):
        quantize_matrix(bad, method="rtn")
    with pytest.raises(ValueError, match=r"H must be \(30, 30\)"):
        quantize_matrix(W, method="rtn", H=np.eye(29))
    with pytest.raises(ValueError, match="H contains NaN or inf"):
        quantize_matrix(W, method="rtn", H=np.full((30, 30), np.nan))
    with pytest.raises(ValueError, match="feedback='ldlq' needs H"):
        quantize_matrix(W, method="rtn", feedback="ldlq")
    with pytest.raises(TypeError, match="unexpected keyword argument 'rotation'"):
        quantize_matrix(W, method="rtn", rotation="none")


def test_block_layout():
    L = BlockLayout(3, 50, 24, "tensor")
    assert (L.padded, L.nblocks, L.ngroups, L.scale_shape, L.tensor) == (72, 3, 1, (1, 1), True)
    assert L == BlockLayout(3, 50, 24, "tensor") != BlockLayout(3, 50, 24, "row")
    assert repr(L) == "BlockLayout(out_features=3, in_features=50, block=24, group='tensor')"
    B = L.blocks(np.ones((3, 50)))
    assert B.shape == (3, 3, 24) and B.sum() == 150 and B[:, 2, 2:].sum() == 0
    assert L.group_sum(np.ones((3, 3))).tolist() == [[9.0]]
    assert BlockLayout(2, 30, 1, 16).group_sum(np.ones((2, 30))).tolist() == [[16, 14], [16, 14]]
    with pytest.raises(ValueError, match="out_features must be >= 1"):
        BlockLayout(0, 5, 1)
    with pytest.raises(TypeError, match="in_features must be an int"):
        BlockLayout(2, 5.0, 1)
    with pytest.raises(ValueError, match="multiple of the block length 24"):
        BlockLayout(2, 50, 24, 16)
    assert LeechQuantizedLinear(50, 3, method="leech-ball", group="tensor").layout == L


# --------------------------------------------------------------------------- the calibration plan


def test_calibration_plan_quantizes_and_replaces():
    net, ref = _net(), _net()
    cfg = QuantizeConfig(method="rtn", skip=("4",))
    seen = []
    targets = [(n, m) for n, m in net.named_modules() if n in ("0", "2")]
    plan = CalibrationPlan(net, targets, cfg, callback=lambda n, i: seen.append((n, i["index"],
                                                                                  i["total"])))
    assert plan.run(_data()) == ["0", "2"] == plan.done
    assert seen == [("0", 0, 2), ("2", 1, 2)]
    quantize_model(ref, cfg, data=_data())
    _same_layers(net, ref)
    with pytest.raises(TypeError, match="config must be a QuantizeConfig"):
        CalibrationPlan(net, targets, {"method": "rtn"})
