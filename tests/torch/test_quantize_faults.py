"""Faults and bad input in quantized models and files (issue #24, items 3-6, 8-10, 14)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from torch_ext import LilaConfig, LilaTransformer
from torch_ext.quantize import (
    LeechQuantizedLinear,
    QuantizeConfig,
    load_quantized,
    model_bits_report,
    quantize_model,
    save_quantized,
)
from torch_ext.quantize.codecs import get_codec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 24))


def _saved(tmp_path, method="rtn", **kw):
    net = quantize_model(_net(), method=method, skip=(), max_points=64, **kw)
    path = tmp_path / "q.safetensors"
    save_quantized(net, path)
    return net, path


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    return meta, load_file(str(path))


def _rewrite(path, out, meta=None, tensors=None):
    m, t = _read(path)
    save_file(tensors if tensors is not None else t, str(out), metadata=meta if meta is not None else m)
    return out


def _with_layer(path, out, name, **changes):
    meta, t = _read(path)
    layers = json.loads(meta["quantized_layers"])
    layers[name].update(changes)
    meta["quantized_layers"] = json.dumps(layers)
    return _rewrite(path, out, meta, t)


# --------------------------------------------------------------------------- 3: config before allocation


class _Wide(nn.Sequential):
    """A registered toy architecture whose build makes a dense (n, n) buffer from data."""

    def __init__(self, n):
        super().__init__(nn.Linear(n, n))
        self.register_buffer("kernel", torch.from_numpy(__import__("numpy").ones((n, n), "float32")),
                             persistent=False)
        self.config = type("C", (), {"to_dict": lambda _self, n=n: {"n": n}})()


def _check_wide(config, shapes, file_size):
    n = config.get("n")
    if not isinstance(n, int) or shapes.get("0.weight", ((None, None), 1))[0] != (n, n):
        raise ValueError(f"n={n!r} does not match the layer stored")


def test_a_registered_check_runs_before_the_build(tmp_path, monkeypatch):
    """register_architecture(check=) runs before anything is built: a crafted config
    of a registered architecture (whose build would allocate n*n floats from data)
    is refused without building; the quantized layers appear in the check as
    ``L.weight`` of their float shape."""
    from torch_ext.quantize import io

    monkeypatch.setattr(io, "_ARCHITECTURES", dict(io._ARCHITECTURES))
    monkeypatch.setattr(io, "_CHECKS", dict(io._CHECKS))
    built = []
    io.register_architecture("wide_config", _Wide, lambda d: built.append(d) or _Wide(d["n"]),
                             check=_check_wide)
    net = quantize_model(_Wide(48), method="rtn", skip=())
    path = tmp_path / "w.safetensors"
    save_quantized(net, path)
    back = load_quantized(path)
    assert built and isinstance(back[0], LeechQuantizedLinear)
    meta, t = _read(path)
    meta["wide_config"] = json.dumps({"n": 10**6})  # 4 TB if it were built
    built.clear()
    with pytest.raises(ValueError, match=r"invalid stored _Wide config: n=1000000 does not match"):
        load_quantized(_rewrite(path, tmp_path / "bad.safetensors", meta, t))
    assert built == []


@pytest.mark.parametrize("change", [{"d_model": 96000, "n_layer": 64}, {"vocab_size": 10**9},
                                    {"block_size": 10**9}])
def test_a_crafted_lila_config_fails_before_any_allocation(tmp_path, change):
    """A stored LILA config far larger than the file's tensors is refused from the
    header, in a subprocess whose address space is capped at 3 GiB (the build of
    d_model=96000 would ask for 74 GB)."""
    model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    quantize_model(model, method="rtn")
    path = tmp_path / "q.safetensors"
    save_quantized(model, path)
    meta, t = _read(path)
    cfg = json.loads(meta["lila_config"])
    cfg.update(change)
    meta["lila_config"] = json.dumps(cfg)
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta, t)
    code = textwrap.dedent(f"""
        import resource, sys
        import torch_ext
        from torch_ext.quantize import load_quantized
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        try:
            load_quantized({str(bad)!r})
        except ValueError as exc:
            print("REFUSED", exc)
            sys.exit(0)
        print("LOADED")
        sys.exit(1)
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "REFUSED" in r.stdout and "invalid stored LILA config" in r.stdout, \
        r.stdout + r.stderr


def test_the_header_is_checked_before_the_model_is_built(tmp_path, monkeypatch):
    """A layer config that its codes do not bear out is refused before any layer or
    model is built (no LeechQuantizedLinear is constructed)."""
    _, path = _saved(tmp_path)
    bad = _with_layer(path, tmp_path / "big.safetensors", "0", in_features=10**9)
    made = []
    init = LeechQuantizedLinear.__init__

    def spy(self, *a, **k):
        made.append(a)
        init(self, *a, **k)

    monkeypatch.setattr(LeechQuantizedLinear, "__init__", spy)
    with pytest.raises(ValueError, match=r"layer '0'.*needs packed codes of shape"):
        load_quantized(bad, model=_net())
    assert made == []


# --------------------------------------------------------------------------- 4: half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_round_trip_sequential(tmp_path, dtype):
    net = quantize_model(_net().to(dtype), method="rtn", skip=())
    path = tmp_path / "h.safetensors"
    save_quantized(net, path)
    back = load_quantized(path, model=_net())
    assert back[0].bias.dtype == dtype and back[2].bias.dtype == dtype
    x = torch.randn(3, 48, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_round_trip_lila(tmp_path, dtype):
    torch.manual_seed(0)
    model = LilaTransformer(LilaConfig.preset("lila-tiny")).to(dtype)
    quantize_model(model, method="rtn")
    path = tmp_path / "h.safetensors"
    save_quantized(model, path)
    back = load_quantized(path)
    assert back.wte.weight.dtype == dtype
    idx = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, model(idx).logits)


# --------------------------------------------------------------------------- 5: overflowing weights


def test_finite_scales_and_gains_whose_product_overflows_are_refused(tmp_path):
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Linear(48, 8)), method="leech-shape-gain", skip=(),
                         max_points=64)
    path = tmp_path / "q.safetensors"
    save_quantized(net, path)
    meta, t = _read(path)
    t["0.scales"] = torch.full_like(t["0.scales"], 65504.0)
    t["0.gains"] = torch.full_like(t["0.gains"], 3e38)
    del meta["quantized_checksums"]  # the value checks, not the checksum, must catch it
    bad = _rewrite(path, tmp_path / "big.safetensors", meta, t)
    with pytest.raises(ValueError, match=r"layer '0': the dequantized weight is not finite"):
        load_quantized(bad, model=nn.Sequential(nn.Linear(48, 8)))
    with torch.no_grad():
        net[0].scales.fill_(65504.0)
        net[0].gains.fill_(3e38)
    with pytest.raises(ValueError, match="not finite"):  # and refused at save
        save_quantized(net, tmp_path / "never.safetensors")
    assert not (tmp_path / "never.safetensors").exists()


def test_the_overflow_check_decodes_nothing_for_an_ordinary_layer(monkeypatch):
    q = LeechQuantizedLinear.from_linear(nn.Linear(48, 8), "rtn", rotation="hadamard",
                                         scale_dtype=torch.float32)

    def boom(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(LeechQuantizedLinear, "_stored_weight", boom)
    q.check_finite()  # the bound is enough
    with torch.no_grad():
        q.scales.fill_(3e38)
    with pytest.raises(AssertionError, match="decoded"):  # the bound overflows: exact check
        q.check_finite()


# --------------------------------------------------------------------------- 6, 14: crafted metadata

BAD_VALUES = [None, -1, 0, 10**30, float("nan"), float("inf"), True, "48", 4.5, [], {}]
FIELDS = ["in_features", "out_features", "bias", "method", "bits", "group", "scale_dtype", "params",
          "rotation", "rotation_seeds", "code_bits", "codebook_size"]


@pytest.mark.parametrize("field", FIELDS)
def test_every_layer_config_field_is_checked(tmp_path, field):
    """Each field of a layer config, set to a wrong type, null, a negative, a huge
    number, NaN, Infinity, a bool, a string or a float, is a ValueError naming the
    layer (no other exception escapes)."""
    _, path = _saved(tmp_path, rotation="hadamard")
    meta, t = _read(path)
    for i, v in enumerate(BAD_VALUES):
        layers = json.loads(meta["quantized_layers"])
        if (field, v) in (("bias", True), ("params", None), ("group", 10**30)):
            continue  # valid: null params are the method's default, a group past the row is the row
        layers["0"][field] = v
        m = dict(meta, quantized_layers=json.dumps(layers))
        m.pop("quantized_checksums")
        bad = _rewrite(path, tmp_path / f"bad{i}.safetensors", m, t)
        with pytest.raises(ValueError, match=r"'0'"):
            load_quantized(bad, model=_net())


def test_layer_config_messages_name_the_field(tmp_path):
    _, path = _saved(tmp_path)
    cases = [({"in_features": "48"}, r"in_features must be a positive int, got '48'"),
             ({"scale_dtype": "int8"}, r"unknown scale_dtype 'int8': must be one of \('float16'"),
             ({"params": [1]}, r"params must be a JSON object or null, got \[1\]"),
             ({"rotation_seeds": [float("inf"), 0]}, r"rotation_seeds must be two non-negative ints"),
             ({"rotation_seeds": [1.5, 0]}, r"rotation_seeds must be two non-negative ints"),
             ({"rotation_seeds": [True, 0]}, r"rotation_seeds must be two non-negative ints"),
             ({"bits": True}, r"bits must be a finite number"),
             ({"params": {"levels": 7}}, r"params .* do not match the codebook")]
    for i, (change, msg) in enumerate(cases):
        meta, t = _read(path)
        layers = json.loads(meta["quantized_layers"])
        layers["0"].update(change)
        meta["quantized_layers"] = json.dumps(layers)
        bad = _rewrite(path, tmp_path / f"c{i}.safetensors", meta, t)
        with pytest.raises(ValueError, match=msg):
            load_quantized(bad, model=_net())


@pytest.mark.parametrize("value, msg", [
    ("[]", "must be a JSON object"), ("null", "must be a JSON object"), ("5", "must be a JSON object"),
    ('{"0": 5}', "layer '0'.*must be a JSON object, got int"), ("{", "not valid JSON"),
])
def test_quantized_layers_of_the_wrong_kind(tmp_path, value, msg):
    _, path = _saved(tmp_path)
    meta, t = _read(path)
    meta["quantized_layers"] = value
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta, t)
    with pytest.raises(ValueError, match=msg):
        load_quantized(bad, model=_net())


@pytest.mark.parametrize("key, value", [("quantized_checksums", "[]"), ("quantized_checksums", '{"0": 5}'),
                                        ("quantized_aliases", "5"), ("quantized_aliases", '{"9": "7"}'),
                                        ("quantized_aliases", '{"2": 0}')])
def test_the_other_quantized_metadata_fields_are_checked(tmp_path, key, value):
    _, path = _saved(tmp_path)
    meta, t = _read(path)
    meta[key] = value
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta, t)
    with pytest.raises(ValueError, match=key):
        load_quantized(bad, model=_net())


def test_a_missing_field_is_named(tmp_path):
    _, path = _saved(tmp_path)
    meta, t = _read(path)
    del meta["quantized_layers"]
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta, t)
    with pytest.raises(ValueError, match="'quantized_layers' metadata field is missing"):
        load_quantized(bad, model=_net())
    meta, t = _read(path)
    layers = json.loads(meta["quantized_layers"])
    del layers["0"]["bits"]
    meta["quantized_layers"] = json.dumps(layers)
    with pytest.raises(ValueError, match="lacks 'bits'"):
        load_quantized(_rewrite(path, tmp_path / "nobits.safetensors", meta, t), model=_net())


# --------------------------------------------------------------------------- 8: re-quantizing


def test_quantizing_a_quantized_model_is_refused():
    net = quantize_model(_net(), method="leech-ball", skip=(), max_points=64)
    before = [net[0].packed.clone(), net[0].method]
    with pytest.raises(ValueError, match="already quantized.*quantize the float model"):
        quantize_model(net, method="rtn", bits=3)
    assert torch.equal(net[0].packed, before[0]) and net[0].method == before[1]


# --------------------------------------------------------------------------- 9: a module used twice


def test_a_module_used_twice_is_quantized_once_and_everywhere(tmp_path):
    torch.manual_seed(0)
    shared = nn.Linear(48, 48)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    quantize_model(net, method="rtn", skip=())
    assert isinstance(net[0], LeechQuantizedLinear) and net[2] is net[0]
    r = model_bits_report(net)
    assert len(r.layers) == 1 and r.quantized_weights == 48 * 48
    path = tmp_path / "shared.safetensors"
    save_quantized(net, path)
    meta, t = _read(path)
    assert set(json.loads(meta["quantized_layers"])) == {"0"}
    assert json.loads(meta["quantized_aliases"]) == {"2": "0"}
    assert not any(k.startswith("2.") for k in t)  # stored once
    s2 = nn.Linear(48, 48)
    back = load_quantized(path, model=nn.Sequential(s2, nn.ReLU(), s2))
    assert back[2] is back[0]
    x = torch.randn(2, 48)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_a_module_used_twice_is_skipped_if_any_name_is():
    shared = nn.Linear(24, 24)
    net = nn.Sequential()
    net.add_module("body", shared)
    net.add_module("lm_head", shared)
    quantize_model(net, method="rtn")
    assert type(net.body) is nn.Linear and net.body is net.lm_head


def test_a_module_used_twice_is_calibrated_on_both_uses():
    torch.manual_seed(0)
    shared = nn.Linear(24, 24)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    quantize_model(net, method="rtn", data=torch.randn(16, 24), skip=())
    assert net[2] is net[0] and isinstance(net[0], LeechQuantizedLinear)
    assert any("shared" in n for n in net[0].stats["notes"])


# --------------------------------------------------------------------------- 10: bits


@pytest.mark.parametrize("method, bits", [("e8", 3), ("e8", 8), ("e8", 9), ("e8", 100), ("e8", 2.5),
                                          ("leech-ball", 3), ("leech-shape-gain", 3), ("rtn", 9),
                                          ("leech-trio", 3)])
def test_unsupported_bits_are_refused_naming_bits(method, bits):
    with pytest.raises(ValueError, match=r"bits") as info:
        QuantizeConfig(method=method, bits=bits)
    assert "bits_per_dim" not in str(info.value)


def test_supported_e8_bits_still_work():
    assert get_codec("e8", 2).params == {"max_norm": 10}
    assert get_codec("e8", 2.375).params == {"max_norm": 16}
    with pytest.raises(ValueError, match=r"e8 supports bits from 0\.989 to 2\.375"):
        get_codec("e8", 3)


# --------------------------------------------------------------------------- 14: the smaller ones


def test_a_raising_callback_leaves_the_model_as_it_was():
    net = _net()
    layers = list(net)

    def cb(name, info):
        if info["index"] == 1:
            raise RuntimeError("stop")

    for data in (None, torch.randn(16, 48)):
        with pytest.raises(RuntimeError, match="stop"):
            quantize_model(net, method="rtn", skip=(), callback=cb, data=data)
        assert list(net) == layers and all(not isinstance(m, LeechQuantizedLinear) for m in net)
    shared = nn.Linear(24, 24)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(RuntimeError, match="stop"):
        quantize_model(net, method="rtn", skip=(), callback=lambda n, i: (_ for _ in ()).throw(RuntimeError("stop")))
    assert net[0] is shared and net[2] is shared


def test_save_refuses_nan_scales(tmp_path):
    net = quantize_model(_net(), method="rtn", skip=())
    with torch.no_grad():
        net[0].scales[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer '0': scales contain NaN or inf: not saved"):
        save_quantized(net, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


@pytest.mark.parametrize("rotation", ["none", "hadamard"])
def test_rotated_and_plain_layers_check_inputs_alike(rotation):
    q = LeechQuantizedLinear.from_linear(nn.Linear(48, 8), "rtn", rotation=rotation)
    with pytest.raises(ValueError, match="last dimension 48"):
        q(torch.randn(2, 47))
    with pytest.raises(ValueError, match="last dimension 48"):
        q(torch.tensor(1.0))
    for x in (torch.randint(0, 3, (2, 48)), torch.randn(2, 48, dtype=torch.complex64)):
        with pytest.raises(TypeError, match="floating-point"):
            q(x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        q([0.0] * 48)
    assert q(torch.randn(48)).shape == (8,)


def test_a_flipped_code_byte_or_swapped_seeds_fail_the_checksum(tmp_path):
    net, path = _saved(tmp_path, rotation="hadamard")
    meta, t = _read(path)
    t["0.packed"][0, 0] ^= 1
    with pytest.raises(ValueError, match=r"layer '0' fails its checksum"):
        load_quantized(_rewrite(path, tmp_path / "flip.safetensors", meta, t), model=_net())
    meta, t = _read(path)
    layers = json.loads(meta["quantized_layers"])
    layers["0"]["rotation_seeds"] = layers["0"]["rotation_seeds"][::-1]
    meta["quantized_layers"] = json.dumps(layers)
    with pytest.raises(ValueError, match=r"layer '0' fails its checksum"):
        load_quantized(_rewrite(path, tmp_path / "seeds.safetensors", meta, t), model=_net())
    meta, t = _read(path)  # a file without checksums (written before them) still loads
    del meta["quantized_checksums"]
    back = load_quantized(_rewrite(path, tmp_path / "old.safetensors", meta, t), model=_net())
    x = torch.randn(2, 48)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
