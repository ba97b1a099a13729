"""``leechlib lila quantize``: a quantized checkpoint that ``lila eval`` reads, calibrated on train data."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_ext.lila import cli  # noqa: E402
from torch_ext.lila.train import train  # noqa: E402


@pytest.fixture
def trained(tiny_args):
    return train(dict(tiny_args, d_model=48, n_head=2, steps=4))


def test_quantize_then_eval(trained, tiny_args, tmp_path, capsys, monkeypatch):
    import torch_ext.lila.quantize as qlila
    from torch_ext.lila.checkpoint import load_checkpoint
    from torch_ext.lila.data import load_data
    from torch_ext.lila.evaluate import evaluate
    from torch_ext.quantize import LeechQuantizedLinear

    seen = {}
    real = qlila.calibration_windows

    def spy(tokens, *a, **k):
        seen["tokens"] = np.asarray(tokens)
        return real(tokens, *a, **k)

    monkeypatch.setattr(qlila, "calibration_windows", spy)
    out = tmp_path / "q" / "model-2bit.safetensors"
    j = tmp_path / "q.json"
    run = Path(trained.checkpoint).parent
    # the run's corpus is a path: named on the command line, never read from the checkpoint (issue 24 item 2)
    corpus = ["--data", tiny_args["data"], "--cache-dir", tiny_args["cache_dir"]]
    assert cli.main(["quantize", str(run), "--out", str(out), "--method", "rtn", "--calib-steps", "8",
                     "--calib-batch-size", "2", "--act-order", "--json", str(j), "--quiet", *corpus]) == 0
    text = capsys.readouterr().out
    assert "rotation hadamard, feedback ldlq" in text and "calibration" in text
    rep = json.loads(j.read_text())
    assert rep["calibration_tokens"] == 8 * 2 * 16 and len(rep["layers"]) == 4
    assert all(x["calibration"] in ("kept", "rejected") for x in rep["layers"])
    # calibration windows came from the training split, never the validation split
    ck = load_checkpoint(run)
    targs = ck.meta["args"]
    data = load_data(targs["data"], "byte", cache_dir=targs["cache_dir"], val_fraction=targs["val_fraction"])
    assert np.array_equal(seen["tokens"], np.asarray(data.train.tokens))
    # eval reads the quantized checkpoint like any other
    q = load_checkpoint(out)
    assert q.step == ck.step and q.meta["quantization"]["method"] == "rtn"
    assert q.meta["quantization"]["act_order"] is True
    assert sum(isinstance(m, LeechQuantizedLinear) for m in q.model.modules()) == 4
    je = tmp_path / "eval.json"
    assert cli.main(["eval", str(out), "--json", str(je), "--no-ranks", *corpus, "--split", "validation"]) == 0
    got = json.loads(je.read_text())
    want = evaluate(q.model, data, "validation", batch_size=8, ranks=False)
    assert got["bpc"] == pytest.approx(want.bpc, rel=1e-6)
    assert got["step"] == ck.step


def test_quantize_without_calibration_and_errors(trained, tmp_path, capsys):
    out = tmp_path / "plain.safetensors"
    run = Path(trained.checkpoint).parent
    assert cli.main(["quantize", str(run), "--out", str(out), "--method", "leech-ball",
                     "--calib-steps", "0", "--rotation", "none", "--max-points", "64", "--quiet"]) == 0
    assert "feedback none, 0 calibration tokens" in capsys.readouterr().out
    assert cli.main(["quantize", str(run), "--out", str(out), "--calib-steps", "0", "--feedback", "ldlq",
                     "--quiet", "--force"]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert cli.main(["quantize", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main(["quantize", str(run)]) == 2  # --out is required
    assert cli.main(["quantize", str(run), "--out", str(out), "--calib-steps", "-1"]) == 2
    assert cli.main(["quantize", str(run), "--out", str(out), "--method", "gptq"]) == 2


def test_quantize_checkpoint_takes_a_config(trained, tiny_args, tmp_path):
    from safetensors.torch import load_file

    from torch_ext.lila.quantize import quantize_checkpoint
    from torch_ext.quantize import QuantizeConfig

    run = Path(trained.checkpoint).parent
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    cfg = QuantizeConfig(method="rtn", rotation="none", seed=3)
    data = dict(data=tiny_args["data"], cache_dir=tiny_args["cache_dir"])
    ra = quantize_checkpoint(run, a, cfg, calib_steps=2, calib_batch_size=2, **data)
    rb = quantize_checkpoint(run, b, method="rtn", rotation="none", seed=3, calib_steps=2, calib_batch_size=2,
                             **data)
    assert ra["settings"] == rb["settings"] and ra["settings"]["feedback"] == "ldlq"
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    with pytest.raises(TypeError, match="got both a QuantizeConfig and seed="):
        quantize_checkpoint(run, a, cfg, seed=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        quantize_checkpoint(run, a, bogus=1)


def test_requantizing_is_refused_before_any_data_is_read(trained, tiny_args, tmp_path, monkeypatch):
    from torch_ext.lila import quantize as lq

    run = Path(trained.checkpoint).parent
    q = tmp_path / "q.safetensors"
    lq.quantize_checkpoint(run, q, method="rtn", rotation="none", calib_steps=0)

    def no_data(*a, **k):
        raise AssertionError("the corpus was read")

    monkeypatch.setattr(lq, "load_data", no_data)
    with pytest.raises(ValueError, match="already quantized"):
        lq.quantize_checkpoint(q, tmp_path / "qq.safetensors", method="rtn", bits=3, calib_steps=2,
                               data=tiny_args["data"], cache_dir=tiny_args["cache_dir"])
    assert not (tmp_path / "qq.safetensors").exists()


def test_quantize_never_destroys_files(trained, tmp_path, capsys):
    """--out: an existing file is refused unless --force, the input checkpoint and anything
    that is not a regular file always; outputs are checked before any work, and a
    failed write leaves no file and no folder behind."""
    import os
    import stat

    import torch_ext.lila.quantize as qlila

    run = Path(trained.checkpoint).parent
    ckpt = Path(trained.checkpoint)
    before = ckpt.read_bytes()
    base = ["quantize", str(run), "--method", "rtn", "--calib-steps", "0", "--rotation", "none", "--quiet"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli.main(base + ["--out", str(notes)]) == 2
    assert "exists" in capsys.readouterr().err and notes.read_text() == "mine"
    # the checkpoint read is never overwritten, not even with --force (file or run directory given)
    for src in (str(run), str(ckpt)):
        args = ["quantize", src] + base[2:] + ["--out", str(ckpt), "--force"]
        assert cli.main(args) == 2
        assert "never overwritten" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cli.main(base + ["--out", str(fifo), "--force"]) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(os.stat(fifo).st_mode)
    for bad, msg in ((tmp_path, "is a directory"), (notes / "x.safetensors", "not a directory"), ("", "empty")):
        assert cli.main(base + ["--out", str(bad)]) == 2
        assert msg in capsys.readouterr().err
    assert cli.main(base + ["--out", str(tmp_path / "ok.safetensors"), "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err and not (tmp_path / "ok.safetensors").exists()
    # --force replaces a regular file; files get the umask's mode, not 0600
    assert cli.main(base + ["--out", str(notes), "--force"]) == 0
    capsys.readouterr()
    assert notes.read_bytes()[:8] != b"mine" and (os.stat(notes).st_mode & 0o777) == 0o666 & ~_umask()
    # a failing write leaves neither the file, a temporary, nor the folders it made
    deep = tmp_path / "new" / "deeper" / "q.safetensors"

    def boom(*a, **k):
        raise OSError("disk full")

    real = qlila.save_quantized
    qlila.save_quantized = boom
    try:
        assert cli.main(base + ["--out", str(deep)]) == 2  # an OS error: 2, as in every command (was 1)
    finally:
        qlila.save_quantized = real
    assert "disk full" in capsys.readouterr().err and not (tmp_path / "new").exists()


def _umask():
    import os

    m = os.umask(0)
    os.umask(m)
    return m
