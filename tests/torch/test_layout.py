"""torch_ext's wings: old import paths keep working for one release, with a warning;
models register to rebuild themselves from quantized files."""

import json
import os
import subprocess
import sys
import warnings

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
