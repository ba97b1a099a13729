"""torch_ext's wings: old import paths keep working for one release, with a warning;
models register to rebuild themselves from quantized files."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import torch_ext
from torch_ext.quantize import io as qio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _forget(old):
    """Undo an earlier import of ``old`` (the module and the parent's attribute)."""
    sys.modules.pop(old, None)
    parent, _, child = old.rpartition(".")
    if child in vars(sys.modules[parent]):
        delattr(sys.modules[parent], child)


@pytest.mark.parametrize("old, new", sorted(torch_ext._moved.MOVED.items()))
def test_old_import_path_gives_the_new_module_with_a_warning(old, new):
    _forget(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = __import__(old, fromlist=["_"])
    assert mod is sys.modules[new]
    msgs = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any(old in m and new in m for m in msgs), msgs
    assert caught[0].filename == __file__  # the warning points at the importer


def test_from_import_of_an_old_module_warns():
    _forget("torch_ext.train")
    with pytest.warns(DeprecationWarning, match="torch_ext.lila.train"):
        from torch_ext import train
    from torch_ext.lila import train as new

    assert train is new and train.train is new.train


def test_new_paths_do_not_warn():
    code = ("import warnings; warnings.simplefilter('error');"
            "import torch_ext, torch_ext.lila.train, torch_ext.lila.cli, torch_ext.quantize.hadamard,"
            " torch_ext.lila.quantize, torch_ext.ops.codebook")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("module, usage", [("torch_ext.train", "leechlib lila train"),
                                           ("torch_ext.evaluate", "leechlib lila eval"),
                                           ("torch_ext.cli", "usage: leechlib lila"),
                                           ("torch_ext.lila", "usage: leechlib lila")])
def test_python_dash_m_old_and_new(module, usage):
    args = [] if module.endswith(("cli", "lila")) else ["--help"]
    res = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert usage in res.stdout + res.stderr
    if module != "torch_ext.lila":
        assert "deprecated" in res.stderr and "python -m torch_ext.lila" in res.stderr
    else:
        assert "deprecated" not in res.stderr


def test_an_old_module_without_a_command_cannot_be_run():
    res = subprocess.run([sys.executable, "-m", "torch_ext.hadamard"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and "python -m torch_ext.lila" in res.stderr


class _Net(nn.Sequential):
    pass


class _Cfg:
    def __init__(self, n):
        self.n = n

    def to_dict(self):
        return {"n": self.n}


def _build(d):
    if not isinstance(d.get("n"), int):
        raise ValueError("n must be an int")
    net = _Net(nn.Linear(d["n"], 3))
    net.config = _Cfg(d["n"])
    return net


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(qio._ARCHITECTURES, "net_config", (_Net, _build, "net config"))


def test_a_registered_model_rebuilds_itself(tmp_path, registered):
    net = _build({"n": 24})
    torch_ext.quantize_model(net, method="rtn")
    path = tmp_path / "q.safetensors"
    torch_ext.save_quantized(net, path)
    back = torch_ext.load_quantized(path)
    assert isinstance(back, _Net)
    x = torch.randn(2, 24)
    assert torch.equal(back(x), net(x))
    with pytest.raises(ValueError, match="reserved"):
        torch_ext.save_quantized(net, path, metadata={"net_config": "{}"})


def test_a_bad_stored_config_names_the_architecture(tmp_path, registered):
    from safetensors.torch import load_file, save_file

    net = _build({"n": 24})
    torch_ext.quantize_model(net, method="rtn")
    path = tmp_path / "q.safetensors"
    torch_ext.save_quantized(net, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(path), path, metadata={**meta, "net_config": json.dumps({"n": "x"})})
    with pytest.raises(ValueError, match="invalid stored net config: n must be an int"):
        torch_ext.load_quantized(path)


def test_an_unregistered_model_needs_model_argument(tmp_path):
    net = nn.Sequential(nn.Linear(24, 3))
    torch_ext.quantize_model(net, method="rtn")
    path = tmp_path / "q.safetensors"
    torch_ext.save_quantized(net, path)
    with pytest.raises(ValueError, match="holds no LILA config.*pass model="):
        torch_ext.load_quantized(path)


@pytest.mark.parametrize("args, exc, match", [
    (("", _Net, _build), TypeError, "key"),
    ((5, _Net, _build), TypeError, "key"),
    (("format", _Net, _build), ValueError, "reserved"),
    (("k", int, _build), TypeError, "cls"),
    (("k", _Net, None), TypeError, "build"),
])
def test_register_architecture_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        torch_ext.quantize.register_architecture(*args)


def test_lila_is_registered():
    assert qio._ARCHITECTURES["lila_config"][0] is torch_ext.LilaTransformer


def test_the_general_quantizer_loads_without_the_lila_run_stack():
    """``import torch_ext.quantize`` brings no training, data, checkpoint or CLI module."""
    code = ("import sys, torch_ext.quantize, torch_ext.vq, torch_ext.ops;"
            "print(','.join(sorted(m for m in sys.modules if m.startswith('torch_ext.lila.'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert set(filter(None, res.stdout.strip().split(","))) <= {"torch_ext.lila.results"}


# --------------------------------------------------------------------------- rebuilt on meta


class _Toy(nn.Module):
    """A registered toy: a quantized layer, a float head tied to the embedding, a stored
    buffer and, by ``derived``, a tensor the file does not hold, made in different ways."""

    def __init__(self, d):
        super().__init__()
        n, derived = d["n"], d.get("derived", "none")
        self.config = _Cfg(n)
        self.config.to_dict = lambda: dict(d)
        self.emb = nn.Embedding(5, n)
        self.fc = nn.Linear(n, n)
        self.head = nn.Linear(n, 5, bias=False)
        self.head.weight = self.emb.weight  # tied, left in float
        self.register_buffer("scale", torch.ones(n))  # persistent: from the file
        if derived == "none":
            self.offset = None
        elif derived == "numpy":  # from data: a real tensor under the meta device too
            self.register_buffer("offset", torch.from_numpy(np.arange(n, dtype=np.float32)), persistent=False)
        elif derived == "factory":  # a factory function: on the meta device there
            self.register_buffer("offset", torch.arange(n, dtype=torch.float32), persistent=False)
        elif derived == "attribute":  # a plain attribute, not a buffer
            self.offset = torch.arange(n, dtype=torch.float32)
        elif derived == "value":  # reads a weight: fails on the meta device
            self.register_buffer("offset", torch.full((n,), float(self.fc.weight.isnan().sum())),
                                 persistent=False)

    def forward(self, idx):
        x = self.emb(idx) * self.scale
        if self.offset is not None:
            x = x + self.offset
        return self.head(self.fc(x))


@pytest.mark.parametrize("derived, on_meta", [("none", True), ("numpy", True), ("factory", False),
                                              ("attribute", False), ("value", False)])
def test_a_rebuilt_model_never_allocates_the_replaced_weights(tmp_path, monkeypatch, derived, on_meta):
    """load_quantized builds a registered model on the meta device: the layers it replaces
    never hold a float weight, the rest is loaded from the file exactly (ties kept).  A
    build that cannot run there, or leaves a tensor there that the file cannot fill, is
    built again normally."""
    builds, weights = [], []

    def build(d):
        builds.append(torch.empty(0).device.type)
        return _Toy(d)

    init = nn.Linear.reset_parameters

    def record(self):
        weights.append((self.weight.device.type, tuple(self.weight.shape)))
        init(self)

    monkeypatch.setitem(qio._ARCHITECTURES, "toy_config", (_Toy, build, "toy config"))
    torch.manual_seed(0)
    net = _Toy({"n": 24, "derived": derived})
    with torch.no_grad():
        net.scale.uniform_(1.0, 2.0)
    torch_ext.quantize_model(net, method="rtn", skip=("head",))
    path = tmp_path / "q.safetensors"
    torch_ext.save_quantized(net, path)
    monkeypatch.setattr(nn.Linear, "reset_parameters", record)
    back = torch_ext.load_quantized(path)
    assert builds == (["meta"] if on_meta else ["meta", "cpu"])
    fc = [dev for dev, shape in weights if shape == (24, 24)]  # the quantized layer's float weight
    assert fc == (["meta"] if on_meta else ["meta", "cpu"])
    assert back.head.weight is back.emb.weight  # the tie is kept
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert not any(t.is_meta for t in (*back.parameters(), *back.buffers()))
    idx = torch.tensor([[0, 3, 4]])
    with torch.no_grad():
        assert torch.equal(back(idx), net(idx))


def test_the_meta_build_skips_torch_python_meta_kernels(tmp_path):
    """Initializers on the meta device are skipped while a model is rebuilt: torch's meta
    kernel of ``normal_`` is Python and would import torch._dynamo (some 800 modules,
    about 70 MB resident), more than a small model's weights."""
    model = torch_ext.LilaTransformer(torch_ext.LilaConfig.preset("lila-tiny"))
    torch_ext.quantize_model(model, method="rtn")
    path = tmp_path / "q.safetensors"
    torch_ext.save_quantized(model, path)
    code = ("import sys, torch_ext\n"
            "assert 'torch._dynamo' not in sys.modules\n"
            f"torch_ext.load_quantized({str(path)!r})\n"
            "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:3])\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
